"""Edit-method params: one class per method, registered by the `method` users write in `POST /edits`.

A params class carries the method's traits, so the API (validation), the job (what to load) and the runner never
branch on a method's name:
  layers          "none" (whole model), "optional" (none = whole model) or "required"
  single_layer    edits exactly one layer (a sweep runs it once per layer)
  ranked          has a `rank` that must fit the layer (`rank_limit`, by default min(out, in * kernel))
  rewrites_layer_map  reads the layer's keys and values, so the layer must be one the architecture manifest marks
                  rewritable (called once, not behind a residual add it cannot model, not a grouped conv)
  needs_x_orig    the edit set must carry `x_orig`, the untransformed twin of each x
  dataset_fields  fields naming datasets it reads, with the role it gives them and whether labels matter
  layer_fields    fields naming a layer of the model (checked like `layers`)
  edit_ref_fields fields naming an earlier single-layer edit whose edited model the method reads
  interpolation_base  may be 1-LI's inline `base`
  audit_sections  keys the method adds to the audit (1-LI's alpha_curve and mli)
  sweep_info      keys of the edit's `info` a layer sweep's comparison table shows
and methods: `nested()` (edits it runs inside itself, e.g. 1-LI's base), `required_splits()` (splits a setting of
it needs) and `holdout_roles()` (dataset roles that, left unnamed, default to a part of the test split held out from
the audit).

The params class is the method's one registration: `impl = "package.module:Class"` in its body names the
implementation (an `EditMethod[ThisParams]`), which the worker imports on first use and checks at start
(editaudit.worker.ml.impl, parity); the API never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import Field, PrivateAttr, model_validator

from editaudit.contracts.registry import Registry, Seed, Strict, check_impl

LayerUse = Literal["none", "optional", "required"]
MAX_SWEEP_LAYERS = 32  # a sweep is one queue message: keep it well inside the broker's visibility timeout


@dataclass(frozen=True)
class DatasetField:
    role: str  # the name the worker hands it to the method under (EditContext.reference[role])
    needs_labels: bool = True  # a reference set for statistics needs none; a locality set's labels must fit


class EditParams(Strict):
    """Base of every edit method's hyperparameters; the ClassVars are its traits (see the module docstring)."""

    method: ClassVar[str]
    impl: ClassVar[str]  # "package.module:Class", the worker's EditMethod[ThisParams]; set in each class body
    layers: ClassVar[LayerUse] = "none"
    single_layer: ClassVar[bool] = False
    ranked: ClassVar[bool] = False
    rewrites_layer_map: ClassVar[bool] = False
    needs_x_orig: ClassVar[bool] = False
    dataset_fields: ClassVar[dict[str, DatasetField]] = {}
    layer_fields: ClassVar[tuple[str, ...]] = ()
    edit_ref_fields: ClassVar[tuple[str, ...]] = ()
    interpolation_base: ClassVar[bool] = False
    audit_sections: ClassVar[tuple[str, ...]] = ()
    sweep_info: ClassVar[tuple[str, ...]] = ("delta",)

    seed: Seed = Field(0, description="seeds every random draw of the edit")

    def nested(self) -> list[tuple[str, EditParams]]:
        """(field path, params) of the edits this one runs inside itself."""
        return []

    def required_splits(self) -> dict[str, str]:
        """split -> the field whose setting needs it (e.g. a generalization target needs a generalization_set)."""
        return {}

    def rank_limit(self, weight_shape: Sequence[int]) -> int:
        """The largest `rank` this edit can use on a weight of this shape."""
        return max_rank(weight_shape)

    def holdout_roles(self) -> set[str]:
        """Roles this edit wants data for that no field names: the job carves them out of the test split and the
        audit does not score those images (an edit that saw them would flatter its own audit)."""
        return set()

    def held_out_roles(self) -> set[str]:
        """`holdout_roles` of this edit and every nested one, less the roles a field names."""
        named = set(self.datasets())
        return {role for _, p in self.scopes() for role in p.holdout_roles()} - named

    def scopes(self, prefix: str = "hyperparams") -> Iterator[tuple[str, EditParams]]:
        """This edit and every nested one, each with the field path its own fields live under."""
        yield prefix, self
        for path, inner in self.nested():
            yield from inner.scopes(f"{prefix}.{path}")

    def datasets(self) -> dict[str, tuple[str, str, DatasetField]]:
        """role -> (field path, dataset ref, field traits) of every dataset this edit (nested ones included) names;
        the outer edit wins when two name the same role."""
        out: dict[str, tuple[str, str, DatasetField]] = {}
        for prefix, p in self.scopes():
            for name, use in p.dataset_fields.items():
                ref = getattr(p, name)
                if ref:
                    out.setdefault(use.role, (f"{prefix}.{name}", ref, use))
        return out

    def edit_refs(self) -> dict[str, str]:
        """field -> the earlier edit's id, for every edit_ref_field that is set."""
        return {f: getattr(self, f) for f in self.edit_ref_fields if getattr(self, f)}

    @property
    def needs_x_orig_anywhere(self) -> bool:
        return any(p.needs_x_orig for _, p in self.scopes())


EDIT_PARAMS: Registry[EditParams] = Registry("edit method", "method")
E = TypeVar("E", bound=EditParams)


def register_edit_params(method: str) -> Callable[[type[E]], type[E]]:
    """Class decorator: register a params class as the hyperparameters of `method`; its body names the
    implementation (`impl = "package.module:Class"`)."""

    def deco(cls: type[E]) -> type[E]:
        check_impl(cls, "edit method", method)
        cls.method = method
        EDIT_PARAMS.register(method, cls)
        return cls

    return deco


def parse_hyperparams(method: str, hyperparams: dict[str, Any] | None) -> EditParams:
    """The method's params from a raw dict (KeyError naming the valid methods for an unknown one)."""
    return EDIT_PARAMS[method].model_validate(hyperparams or {})


HOLDOUT_FRACTION, HOLDOUT_CAP = 0.2, 256


def holdout_size(n: int) -> int:
    """Images held out of an n-image test split for an edit's own use (0 = too few to hold any out)."""
    k = min(HOLDOUT_CAP, int(n * HOLDOUT_FRACTION))
    return k if 1 <= k < n else 0


def max_rank(weight_shape: Sequence[int]) -> int:
    """The largest rank a change of this weight can have: min(out, in * kernel) (conv weights flattened)."""
    return min(weight_shape[0], math.prod(weight_shape[1:]))


# ---------------------------------------------------------------------------------------------------- methods

LOCALITY = {"locality_set": DatasetField("locality")}


class _Locality(EditParams):
    """Gradient edits keep the original predictions (KL) on a locality set, and stop once every edit example is
    classified as its target: without both, a single-class edit set pulls the whole model to that class (digits
    CNN, finetune at lr 1e-3: clean accuracy 0.99 -> 0.10; resnet18 finetune_layer fc: 0.99 -> 0.33)."""

    locality_set: str | None = Field(None, description="dataset id or builtin:<name>: keep its predictions (KL); "
                                     "default: a seeded, class-stratified 20% (at most 256 images) of the test "
                                     "split, held out from the audit")
    locality_weight: float = Field(1.0, ge=0, description="weight of KL(original || edited) on the locality set; "
                                   "0 = no locality term (and nothing held out)")
    stop_when_fixed: bool = Field(True, description="stop once every edit example is classified as its target")
    max_locality_change: float = Field(0.05, ge=0, le=1, description=(
        "trust region: a step after which more than this share of the locality set's predictions differ from the "
        "original model's is undone and the learning rate halved; after `backtracks` undone steps the edit stops "
        "where it is (recorded as stopped: locality). 1 = off"))
    backtracks: int = Field(6, ge=0, le=50, description="undone steps before the trust region stops the edit")

    def holdout_roles(self) -> set[str]:
        return {"locality"} if self.locality_weight > 0 and not self.locality_set else set()


@register_edit_params("finetune")
class FinetuneParams(_Locality):
    """Gradient steps on the edit set (cross-entropy to the edit targets), on every parameter or on `from_layer`
    and all parameters after it, with the locality term and the stop once fixed. The default lr is 10x lower than
    for one layer: with every parameter free the first steps at 1e-3 already move the whole model."""

    impl = "editaudit.worker.ml.edits.finetune:Finetune"
    dataset_fields = LOCALITY
    layer_fields: ClassVar[tuple[str, ...]] = ("from_layer",)
    sweep_info = ("delta", "final_loss")

    steps: int = Field(30, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(1e-4, gt=0, le=10.0, description="learning rate")
    optimizer: Literal["adam", "sgd"] = "adam"
    batch_size: int = Field(64, ge=1, le=4096, description="edit examples per step (all if the set is smaller)")
    weight_decay: float = Field(0.0, ge=0)
    from_layer: str | None = Field(None, description="train this layer and everything after it (to the output)")


@register_edit_params("finetune_layer")
class FinetuneLayerParams(FinetuneParams):
    """Like finetune, restricted to the parameters of the named `layers`."""

    impl = "editaudit.worker.ml.edits.finetune_layer:FinetuneLayer"
    layers = "required"
    layer_fields = ()
    interpolation_base = True

    lr: float = Field(1e-3, gt=0, le=10.0, description="learning rate")
    from_layer: Literal[None] = None


@register_edit_params("enn")
class ENNParams(_Locality):
    """A post-hoc ENN-style editor (Sinitsin et al. 2020): gradient steps on the parameter group (`layers`, or the
    whole model) until every edit example is classified as its target or `max_steps`, with the stability term
    KL(original || edited) on `locality_set`."""

    impl = "editaudit.worker.ml.edits.enn:ENN"
    layers = "optional"
    dataset_fields = LOCALITY
    sweep_info = ("delta", "final_loss")

    max_steps: int = Field(100, ge=1, le=100_000)
    lr: float = Field(1e-3, gt=0, le=10.0)
    optimizer: Literal["adam", "sgd"] = "adam"
    batch_size: int = Field(64, ge=1, le=4096)


@register_edit_params("low_rank")
class LowRankParams(_Locality):
    """Direct low-rank editing (Brown et al. 2023, v1): minimise the edit set's cross-entropy over dW = U V^T on one
    layer (conv weights flattened to [out, in*kh*kw]), U zero-initialised so the edit starts at the original model;
    then merge W + dW. rank(dW) <= rank is recorded."""

    impl = "editaudit.worker.ml.edits.low_rank:LowRank"
    layers = "required"
    dataset_fields = LOCALITY
    single_layer = True
    ranked = True
    interpolation_base = True
    sweep_info = ("delta", "delta_rank", "final_loss")

    rank: int = Field(1, ge=1, le=4096)
    steps: int = Field(50, ge=1, le=100_000)
    lr: float = Field(3e-3, gt=0, le=10.0)
    batch_size: int = Field(64, ge=1, le=4096)


@register_edit_params("rewrite")
class RewriteParams(EditParams):
    """Rewriting a layer's key->value map (Bau et al. 2020; Santurkar et al. 2021, "Editing a classifier by rewriting
    its prediction rules"). Keys are the layer's inputs on the edit images `x` (conv: the unfolded patches at every
    output location), values its outputs on the untransformed twins `x_orig`, weighted by `mask` (resized to the
    layer's output) when given. dW is restricted to the `rank` directions of the SVD of C^-1 K (C: the keys' second
    moment over `reference_set`, cached per model, layer, reference data, sample count and seed), so keys that are
    common in ordinary images move least. `solver`: closed_form = least squares in that subspace; iterative = the
    original code's masked L1 with Adam (on ΔW's coordinates in the subspace, where the original projects a full ΔW
    onto it). BatchNorm stays in eval mode. A layer that ends a residual block (conv -> BatchNorm -> + skip -> ReLU,
    found in the traced graph) is matched at the block's output, where the next layer reads it: the skip branch
    still carries what the edit removes. `keys`: pixel = per-pixel channel keys, patch = unfolded patches, auto (the
    default) = pixel for a conv, patch for a linear layer (whose keys are its input rows either way), chosen by
    bench/rewrite_keys.py: at a residual block's last conv, pixel keys fixed as many edit images as patch keys or more
    at rank 1; the edit's info records the convention used (`keys_convention`)."""

    impl = "editaudit.worker.ml.edits.rewrite:Rewrite"
    layers = "required"
    single_layer = True
    ranked = True
    needs_x_orig = True
    interpolation_base = True
    sweep_info = ("delta", "delta_rank")
    rewrites_layer_map = True
    dataset_fields = {"reference_set": DatasetField("reference", needs_labels=False)}  # C needs images only

    rank: int = Field(1, ge=1, le=4096)
    keys: Literal["auto", "patch", "pixel"] = Field("auto", description="conv keys: patch = the unfolded patch "
                                                    "(rank bounds the flattened dW), pixel = the channel vector at "
                                                    "each pixel (Santurkar et al.; rank bounds dW at every kernel "
                                                    "position), auto = pixel for a conv, patch for a linear layer "
                                                    "(the same keys there)")
    solver: Literal["closed_form", "iterative"] = "closed_form"
    steps: int = Field(500, ge=1, le=100_000, description="iterative: Adam steps")
    lr: float = Field(1e-2, gt=0, le=10.0, description="iterative: Adam learning rate")
    ridge: float = Field(0.01, gt=0, le=10.0,
                         description="regulariser of C and of the least squares, x mean eigenvalue")
    use_mask: bool = Field(True, description="weight the keys by the edit set's mask (if it has one)")
    reference_set: str | None = Field(None, description="dataset id or builtin:<name> for C (default: the test set)")
    reference_samples: int = Field(1024, ge=16, le=1_000_000, description="images of the reference set used for C")

    def keys_for(self, weight_shape: Sequence[int]) -> Literal["patch", "pixel"]:
        """The convention used on a layer of this weight shape (`auto` resolved)."""
        if self.keys == "patch" or self.keys == "pixel":
            return self.keys
        return "pixel" if len(weight_shape) == 4 else "patch"

    def rank_limit(self, weight_shape: Sequence[int]) -> int:
        pixel = self.keys_for(weight_shape) == "pixel" and len(weight_shape) == 4
        return weight_shape[1] if pixel else max_rank(weight_shape)


class AlphaPolicy(Strict):
    """How 1-layer interpolation picks alpha in W(alpha) = W0 + alpha (W1 - W0).

    fixed: `alpha` as given. min_alpha (default): the smallest alpha whose accuracy on `target_split` reaches the
    threshold (bisection to `resolution` while the path behaves monotonically; a grid when it does not). The
    threshold is `target` when given, else acc(0) + gain_share * (acc(1) - acc(0)): a share of what the full edit
    gains, so a small edit set (8 exemplars: 0.9 means all 8) does not force alpha to 1 and 1-LI trades. The default
    target split is held-out images of the concept (the generalization set) when the edit has one. best_robust:
    among alphas reaching the threshold, the one with the best PGD robust accuracy on a test subset. Whatever the
    mode, the alpha-curve also holds `curve_points` evenly spaced alphas with edit, generalization, test and (when
    `curve_robust`) PGD accuracy at each, so the trade along the path is stored with the audit."""

    mode: Literal["fixed", "min_alpha", "best_robust"] = "min_alpha"
    alpha: float = Field(1.0, ge=0, le=1)
    target_split: Literal["auto", "edit", "generalization"] = Field(
        "auto", description="split whose accuracy alpha must reach: auto = generalization when the edit has a "
        "generalization set, else edit")
    target: float | None = Field(None, ge=0, le=1, description="absolute accuracy threshold; unset: gain_share")
    gain_share: float = Field(0.8, gt=0, le=1, description="threshold as a share of the full edit's gain on "
                              "target_split: acc(0) + gain_share * (acc(1) - acc(0))")
    resolution: float = Field(0.01, ge=0.001, le=0.5)
    robust_eps: float = Field(0.03, ge=0, description="best_robust and the curve: PGD-10 L-inf radius")
    robust_samples: int = Field(256, ge=8, le=100_000, description="best_robust and the curve: test samples "
                                "attacked per alpha")
    grid_points: int = Field(11, ge=3, le=201, description="points of the fallback / best_robust grid")
    curve_points: int = Field(5, ge=0, le=101, description="evenly spaced alphas always on the curve (0 = only the "
                              "search's points)")
    curve_robust: bool = Field(True, description="PGD accuracy at every point of the curve (needs the test set)")


class BaseEdit(Strict):
    """The single-layer edit 1-LI interpolates towards (W1). `hyperparams` are validated here (a bad base is a 422,
    not a failed job) and stored with their defaults."""

    method: str = "finetune_layer"
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    _params: EditParams = PrivateAttr()

    @model_validator(mode="after")
    def _check(self) -> Self:
        bases = sorted(name for name, cls in EDIT_PARAMS.items() if cls.interpolation_base)
        if self.method not in bases:
            raise ValueError(f"base.method must be one of {bases}, got {self.method!r}")
        self._params = parse_hyperparams(self.method, self.hyperparams)
        self.hyperparams = self._params.model_dump(mode="json")
        return self

    @property
    def params(self) -> EditParams:
        return self._params


@register_edit_params("interpolate")
class InterpolateParams(EditParams):
    """1-layer interpolation (Brown et al. 2023): edit one layer with `base` (inline) or reuse the weights of the
    earlier single-layer edit `base_edit_id` of the same model, then move only that layer part of the way."""

    impl = "editaudit.worker.ml.edits.interpolate:Interpolate"
    layers = "required"
    single_layer = True
    edit_ref_fields = ("base_edit_id",)
    audit_sections = ("alpha_curve", "mli")
    sweep_info = ("delta", "alpha")

    base: BaseEdit | None = None
    base_edit_id: str | None = None
    alpha: AlphaPolicy = Field(default_factory=AlphaPolicy)

    @model_validator(mode="after")
    def _one_base(self) -> Self:
        if self.base is not None and self.base_edit_id is not None:
            raise ValueError("give either base (an inline edit) or base_edit_id, not both")
        if self.base is None and self.base_edit_id is None:
            self.base = BaseEdit()
        return self

    def nested(self) -> list[tuple[str, EditParams]]:
        return [("base.hyperparams", self.base.params)] if self.base is not None else []

    def required_splits(self) -> dict[str, str]:
        if self.alpha.target_split == "generalization":
            return {"generalization": "hyperparams.alpha.target_split"}
        return {}
