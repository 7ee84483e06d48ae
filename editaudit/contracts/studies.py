"""A study: one model and one scenario, a grid of edits (methods x layers x hyperparameters x seeds), each run as an
ordinary edit + audit. This module owns the grid's shape and its expansion into runs; the API validates every run
as it would a `POST /edits` before anything is stored, and the summary (editaudit.study) reads the finished runs.

    grid = StudyGrid(methods=["finetune_layer", "low_rank"], layers=["conv2", "fc1"],
                     hyperparams={"low_rank": {"rank": [1, 4]}}, seeds=[0, 1, 2])
    cells = expand(grid)   # 2 x (1 + 2) x 3 = 18 runs, plus one 1-LI run per single-layer run (interpolate)

The seed of a run seeds its edit (`hyperparams.seed`) and its audit (`audit.seed`), so seeds are independent draws
of the edit's randomness and the audit's attacks/corruptions on one model.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator, model_validator

from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.contracts.registry import Seed, Strict

MAX_STUDY_RUNS = 240  # each run is a queued edit: a grid past this is a 422 naming its size
MAX_VALUES = 32  # values per hyperparameter, and hyperparameters per method: the grid is counted before it is built
INTERPOLATE = "interpolate"
GLOB = frozenset("*?[")
RESERVED = {"seed": "seeds are the grid's `seeds`",
            "base": "1-LI runs interpolate the study's own runs (`interpolate`)"}


class StudyGrid(Strict):
    """What varies. `hyperparams` maps a method to lists of values per param (their product is taken); a param a
    method lacks is a 422 (each run is validated as an edit). `layers` applies to the methods that take layers (one
    run per entry); whole-model methods run once per hyperparameter set and seed."""

    methods: list[str] = Field(min_length=1, max_length=16, description="registered edit methods (GET /methods)")
    layers: list[str] = Field(default_factory=list, max_length=32, description="one run per entry (a module path "
                              "or a glob) for methods that take layers")
    hyperparams: dict[str, dict[str, list[Any]]] = Field(default_factory=dict, description="method -> param -> "
                                                         "values (distinct, at most 32); the product of the lists is "
                                                         "taken per method")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=10)
    interpolate: bool = Field(True, description="add a 1-LI run (alpha path with test, robust and edit accuracy) "
                              "for each single-layer run of an interpolation base method (a layer named by path, not "
                              "by a glob)")

    @field_validator("methods")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in EDIT_PARAMS]
        if unknown:
            raise ValueError(f"unknown edit methods {unknown}; valid: {EDIT_PARAMS.names()}")
        if len(set(v)) != len(v):
            raise ValueError("methods must be distinct")
        return v

    @field_validator("seeds", "layers")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        if len(set(v)) != len(v):
            raise ValueError("entries must be distinct")
        return v

    @model_validator(mode="after")
    def _grid(self) -> StudyGrid:
        for method, params in self.hyperparams.items():
            if method not in self.methods:
                raise ValueError(f"hyperparams names method {method!r}, which is not in methods {self.methods}")
            if len(params) > MAX_VALUES:
                raise ValueError(f"hyperparams.{method} varies {len(params)} params; at most {MAX_VALUES}")
            for name, values in params.items():
                if name in RESERVED:
                    raise ValueError(f"hyperparams.{method}.{name} cannot be varied here: {RESERVED[name]}")
                if not values or len(values) > MAX_VALUES:
                    raise ValueError(f"hyperparams.{method}.{name} has {len(values)} values; give 1 to {MAX_VALUES}")
                canonical = [json.dumps(v, sort_keys=True) for v in values]
                if len(set(canonical)) != len(canonical):
                    raise ValueError(f"hyperparams.{method}.{name} repeats a value: {values} (a repeat is not a seed)")
        if any(EDIT_PARAMS[m].layers == "required" for m in self.methods) and not self.layers:
            raise ValueError("methods that take layers need at least one entry in `layers`")
        n = count(self)  # before anything is built: a few bytes of lists can multiply into millions of runs
        if n > MAX_STUDY_RUNS:
            raise ValueError(f"this grid expands to {n} runs; a study holds at most {MAX_STUDY_RUNS}")
        return self


@dataclass(frozen=True)
class Cell:
    """One run of a study: an edit request's method, layers and hyperparameters (seed included), and its group (the
    same run at every seed: what intervals over seeds are taken over)."""

    method: str
    layers: list[str]
    hyperparams: dict[str, Any]
    seed: int
    varied: dict[str, Any] = field(default_factory=dict)  # the grid's values for this run (not the defaults)
    base: str | None = None  # a 1-LI run: the group of the run it interpolates

    @property
    def group(self) -> str:
        """`method layer k=v ...` without the seed: runs of one group differ only by their seed."""
        parts = [self.method, *self.layers, *(f"{k}={_short(v)}" for k, v in sorted(self.varied.items()))]
        return " ".join(parts)


def _short(v: Any) -> str:
    return repr(v) if isinstance(v, dict | list) else str(v)


def _interpolated(grid: StudyGrid, method: str, layers: list[str]) -> bool:
    cls = EDIT_PARAMS[method]
    return (grid.interpolate and cls.interpolation_base and method != INTERPOLATE and len(layers) == 1
            and not GLOB & set(layers[0]))


def _layer_sets(grid: StudyGrid, method: str) -> list[list[str]]:
    return [[layer] for layer in grid.layers] if EDIT_PARAMS[method].layers == "required" else [[]]


def count(grid: StudyGrid) -> int:
    """How many runs `expand` makes, computed from the list lengths (nothing is built)."""
    total = 0
    for method in grid.methods:
        products = math.prod(len(v) for v in grid.hyperparams.get(method, {}).values())
        for layers in _layer_sets(grid, method):
            total += products * len(grid.seeds) * (2 if _interpolated(grid, method, layers) else 1)
    return total


def expand(grid: StudyGrid) -> list[Cell]:
    """Every run of the grid in a stable order: method, layer, hyperparameter product, seed; each single-layer run
    of an interpolation base followed by its 1-LI run when `grid.interpolate`."""
    cells: list[Cell] = []
    for method in grid.methods:
        space = grid.hyperparams.get(method, {})
        names = sorted(space)
        for layers in _layer_sets(grid, method):
            for values in itertools.product(*(space[n] for n in names)):
                varied = dict(zip(names, values, strict=True))
                for seed in grid.seeds:
                    cell = Cell(method, layers, {**varied, "seed": seed}, seed, varied)
                    cells.append(cell)
                    if _interpolated(grid, method, layers):
                        cells.append(Cell(INTERPOLATE, layers, {"seed": seed, "base": {
                            "method": method, "hyperparams": {**varied, "seed": seed}}}, seed,
                            {"base": method, **varied}, base=cell.group))
    return cells
