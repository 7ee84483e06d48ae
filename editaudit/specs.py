"""Torch-free contracts shared by the API and the worker: edit methods, attacks, audit config, built-in datasets.

The API validates requests against these schemas (so a bad request is a 422, not a failed job); the worker's
registries implement the same names, and a unit test keeps the two sets equal. Adding an edit method or an attack
means one params class here and one implementation file in the worker's registry.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------- edit methods


class FinetuneParams(_Strict):
    """Gradient steps on the edit set (cross-entropy to the edit targets)."""

    steps: int = Field(30, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(1e-3, gt=0, le=10.0, description="learning rate")
    optimizer: Literal["adam", "sgd"] = "adam"
    batch_size: int = Field(64, ge=1, le=4096, description="edit examples per step (all if the set is smaller)")
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0


class FinetuneLayerParams(FinetuneParams):
    """Like finetune, restricted to the parameters of the named `layers`."""


EDIT_METHODS: dict[str, type[_Strict]] = {
    "finetune": FinetuneParams,
    "finetune_layer": FinetuneLayerParams,
}
METHODS_NEEDING_LAYERS = {"finetune_layer"}  # the others take no `layers`


# ------------------------------------------------------------------------------------------------------ attacks


def _norm_alias(v):
    """Accept the spellings people use for norms: "inf", "linf", np.inf, 2, "2", "l2"."""
    if isinstance(v, str):
        v = v.lower()
    return {"linf": "inf", "l2": "2", 2: "2", math.inf: "inf"}.get(v, v)


class PGDParams(_Strict):
    """Projected gradient descent (Madry et al. 2018), untargeted, cross-entropy against the split's labels."""

    id: str = Field("pgd", pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="metric name part: <split>.adv.<id>.accuracy")
    name: Literal["pgd"] = "pgd"
    norm: Literal["inf", "2"] = "inf"
    eps: float = Field(0.03, ge=0)
    steps: int = Field(10, ge=1, le=10_000)
    step_size: float | None = Field(None, gt=0, description="default 2.5 * eps / steps")
    random_start: bool = False
    seed: int = 0

    _norm = field_validator("norm", mode="before")(lambda v: _norm_alias(v))

    @property
    def effective_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


class FGSMParams(_Strict):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps (L-inf) or eps along the gradient (L2)."""

    id: str = Field("fgsm", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Literal["fgsm"] = "fgsm"
    norm: Literal["inf", "2"] = "inf"
    eps: float = Field(0.03, ge=0)

    _norm = field_validator("norm", mode="before")(lambda v: _norm_alias(v))


ATTACKS: dict[str, type[_Strict]] = {"pgd": PGDParams, "fgsm": FGSMParams}
AttackParams = Annotated[Union[PGDParams, FGSMParams], Field(discriminator="name")]
_ATTACK = TypeAdapter(AttackParams)


def parse_attack(raw: dict) -> PGDParams | FGSMParams:
    """Validate one attack spec; the `name` picks its schema (an unknown name lists the valid ones)."""
    return _ATTACK.validate_python(raw)


class AuditConfig(_Strict):
    attacks: list[AttackParams] = Field(default_factory=list)
    corruptions: dict | None = None
    max_samples: int | None = Field(None, ge=1, description="per split, class-stratified, seeded")
    seed: int = 0
    batch_size: int = Field(256, ge=1, le=65536)

    @model_validator(mode="after")
    def _check(self):
        ids = [a.id for a in self.attacks]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"attack ids must be unique; repeated: {sorted(dup)}")
        if self.corruptions and self.corruptions.get("names"):
            raise ValueError("corruptions are not available in this version; valid names: []")
        return self


# ------------------------------------------------------------------------------------------------------ datasets

# Built-in datasets that need no upload: sklearn's bundled digits (8x8 grey, 10 classes). The split is fixed and
# documented: sample i goes to the test split when i % 4 == 0 (450 images), else to train (1347 images).
BUILTIN_DATASETS: dict[str, dict] = {
    "builtin:digits-train": {"n": 1347, "shape": [1, 8, 8], "num_classes": 10},
    "builtin:digits-test": {"n": 450, "shape": [1, 8, 8], "num_classes": 10},
}
