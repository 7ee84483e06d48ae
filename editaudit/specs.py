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


class _Locality(_Strict):
    locality_set: str | None = Field(None, description="dataset id or builtin:<name>: keep its predictions (KL)")
    locality_weight: float = Field(1.0, ge=0, description="weight of KL(original || edited) on the locality set")


class FinetuneParams(_Locality):
    """Gradient steps on the edit set (cross-entropy to the edit targets), on every parameter or on `from_layer`
    and all parameters after it, optionally with a locality term. The default lr is 10x lower than for one layer:
    with every parameter free, 30 steps at 1e-3 on 8 exemplars of one class collapse a digits CNN to predicting
    that class (clean accuracy 0.99 -> 0.10); at 1e-4 it keeps 0.75 (bench/edits.py) — use a locality set."""

    steps: int = Field(30, ge=1, le=100_000, description="optimizer steps")
    lr: float = Field(1e-4, gt=0, le=10.0, description="learning rate")
    optimizer: Literal["adam", "sgd"] = "adam"
    batch_size: int = Field(64, ge=1, le=4096, description="edit examples per step (all if the set is smaller)")
    weight_decay: float = Field(0.0, ge=0)
    from_layer: str | None = Field(None, description="train this layer and everything after it (to the output)")
    seed: int = 0


class FinetuneLayerParams(FinetuneParams):
    """Like finetune, restricted to the parameters of the named `layers`."""

    lr: float = Field(1e-3, gt=0, le=10.0, description="learning rate")
    from_layer: Literal[None] = None


class ENNParams(_Locality):
    """A post-hoc ENN-style editor (Sinitsin et al. 2020): gradient steps on the parameter group (`layers`, or the
    whole model) until every edit example is classified as its target or `max_steps`, with the stability term
    KL(original || edited) on `locality_set`."""

    max_steps: int = Field(100, ge=1, le=100_000)
    lr: float = Field(1e-3, gt=0, le=10.0)
    optimizer: Literal["adam", "sgd"] = "adam"
    batch_size: int = Field(64, ge=1, le=4096)
    seed: int = 0


class LowRankParams(_Strict):
    """Direct low-rank editing (Brown et al. 2023, v1): minimise the edit set's cross-entropy over dW = U V^T on one
    layer (conv weights flattened to [out, in*kh*kw]), U zero-initialised so the edit starts at the original model;
    then merge W + dW. rank(dW) <= rank is recorded."""

    rank: int = Field(1, ge=1, le=4096)
    steps: int = Field(50, ge=1, le=100_000)
    lr: float = Field(3e-3, gt=0, le=10.0)
    batch_size: int = Field(64, ge=1, le=4096)
    seed: int = 0


class RewriteParams(_Strict):
    """Rewriting a layer's key->value map (Bau et al. 2020; Santurkar et al. 2021, "Editing a classifier by rewriting
    its prediction rules"). Keys are the layer's inputs on the edit images `x` (conv: the unfolded patches at every
    output location), values its outputs on the untransformed twins `x_orig`, weighted by `mask` (resized to the
    layer's output) when given. dW is restricted to the `rank` directions of the SVD of C^-1 K (C: the keys' second
    moment over `reference_set`, cached per model, layer, reference data, sample count and seed), so keys that are
    common in ordinary images move least. `solver`: closed_form = least squares in that subspace; iterative = the
    original code's masked L1 with Adam (on ΔW's coordinates in the subspace, where the original projects a full ΔW
    onto it). BatchNorm stays in eval mode."""

    rank: int = Field(1, ge=1, le=4096)
    solver: Literal["closed_form", "iterative"] = "closed_form"
    steps: int = Field(500, ge=1, le=100_000, description="iterative: Adam steps")
    lr: float = Field(1e-2, gt=0, le=10.0, description="iterative: Adam learning rate")
    ridge: float = Field(0.01, gt=0, le=10.0, description="regulariser of C and of the least squares, x mean eigenvalue")
    use_mask: bool = Field(True, description="weight the keys by the edit set's mask (if it has one)")
    reference_set: str | None = Field(None, description="dataset id or builtin:<name> for C (default: the test set)")
    reference_samples: int = Field(1024, ge=16, le=1_000_000, description="images of the reference set used for C")
    seed: int = 0


class AlphaPolicy(_Strict):
    """How 1-layer interpolation picks alpha in W(alpha) = W0 + alpha (W1 - W0).

    fixed: `alpha` as given. min_alpha: the smallest alpha whose accuracy on `target_split` reaches `target`
    (bisection to `resolution` while the path behaves monotonically; a grid when it does not). best_robust: among
    alphas reaching the target, the one with the best PGD robust accuracy on a test subset."""

    mode: Literal["fixed", "min_alpha", "best_robust"] = "min_alpha"
    alpha: float = Field(1.0, ge=0, le=1)
    target_split: Literal["edit", "generalization"] = "edit"
    target: float = Field(0.9, ge=0, le=1)
    resolution: float = Field(0.01, ge=0.001, le=0.5)
    robust_eps: float = Field(0.03, ge=0, description="best_robust: PGD-10 L-inf radius")
    robust_samples: int = Field(256, ge=8, le=100_000, description="best_robust: test samples attacked per alpha")
    grid_points: int = Field(11, ge=3, le=201, description="points of the fallback / best_robust grid")


class BaseEdit(_Strict):
    """The single-layer edit 1-LI interpolates towards (W1)."""

    method: Literal["finetune_layer", "low_rank", "rewrite"] = "finetune_layer"
    hyperparams: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self):
        EDIT_METHODS[self.method].model_validate(self.hyperparams)  # a bad base is a 422 now, not a failed job
        return self


class InterpolateParams(_Strict):
    """1-layer interpolation (Brown et al. 2023): edit one layer with `base` (inline) or reuse the weights of the
    earlier single-layer edit `base_edit_id` of the same model, then move only that layer part of the way."""

    base: BaseEdit | None = None
    base_edit_id: str | None = None
    alpha: AlphaPolicy = Field(default_factory=AlphaPolicy)

    @model_validator(mode="after")
    def _one_base(self):
        if self.base is not None and self.base_edit_id is not None:
            raise ValueError("give either base (an inline edit) or base_edit_id, not both")
        if self.base is None and self.base_edit_id is None:
            self.base = BaseEdit()
        return self


EDIT_METHODS: dict[str, type[_Strict]] = {
    "finetune": FinetuneParams,
    "finetune_layer": FinetuneLayerParams,
    "interpolate": InterpolateParams,
    "low_rank": LowRankParams,
    "enn": ENNParams,
    "rewrite": RewriteParams,
}
def max_rank(weight_shape) -> int:
    """The largest rank a change of this weight can have: min(out, in * kernel) (conv weights flattened)."""
    return min(weight_shape[0], math.prod(weight_shape[1:]))


def named_datasets(method: str, hyperparams: dict) -> dict[str, tuple[str, str]]:
    """The datasets an edit's hyperparams name, by role ("locality", "reference") -> (field path, dataset ref).
    1-LI's inline base edit counts: a rewrite base takes its reference set from there."""
    params = EDIT_METHODS[method].model_validate(hyperparams or {})
    scopes = [("hyperparams", params)]
    if isinstance(params, InterpolateParams) and params.base is not None:
        scopes.append(("hyperparams.base.hyperparams",
                       EDIT_METHODS[params.base.method].model_validate(params.base.hyperparams)))
    out: dict[str, tuple[str, str]] = {}
    for prefix, p in scopes:
        for role in ("locality", "reference"):
            ref = getattr(p, f"{role}_set", None)
            if ref:
                out.setdefault(role, (f"{prefix}.{role}_set", ref))
    return out


METHODS_OPTIONAL_LAYERS = {"enn"}  # layers name the parameter group; none = the whole model
METHODS_NEEDING_LAYERS = {"finetune_layer", "interpolate", "low_rank", "rewrite"}  # the others take no `layers`
SINGLE_LAYER_METHODS = {"interpolate", "low_rank", "rewrite"}
RANKED_METHODS = {"low_rank", "rewrite"}  # hyperparams.rank must fit the layer: rank <= max_rank(weight shape)
MAX_SWEEP_LAYERS = 32  # a sweep is one queue message: keep it well inside the broker's visibility timeout
METHODS_NEEDING_X_ORIG = {"rewrite"}  # the edit set must carry x_orig (values come from the untransformed twins)


# ------------------------------------------------------------------------------------------------------ attacks


def _norm_alias(v):
    """Accept the spellings people use for norms: "inf", "linf", np.inf, 2, "2", "l2"."""
    if isinstance(v, str):
        v = v.lower()
    if not isinstance(v, (str, int, float)):
        return v  # let the Literal check reject it with a proper message
    return {"linf": "inf", "l2": "2", 2: "2", math.inf: "inf"}.get(v, v)


class _EpsAttack(_Strict):
    """Common fields of norm-bounded attacks. `eps_sweep` adds a robust-accuracy-vs-eps curve to the audit."""

    id: str = Field("attack", pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="metric name part: <split>.adv.<id>.accuracy")
    norm: Literal["inf", "2"] = "inf"
    eps: float = Field(0.03, ge=0)
    eps_sweep: list[Annotated[float, Field(ge=0)]] | None = Field(None, max_length=32)
    seed: int = 0

    _norm = field_validator("norm", mode="before")(lambda v: _norm_alias(v))


class PGDParams(_EpsAttack):
    """Projected gradient descent (Madry et al. 2018), untargeted, cross-entropy against the split's labels.
    Native path (batched, on device). With `restarts` > 1 an input counts as robust only if every restart fails."""

    id: str = Field("pgd", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Literal["pgd"] = "pgd"
    steps: int = Field(10, ge=1, le=10_000)
    step_size: float | None = Field(None, gt=0, description="default 2.5 * eps / steps")
    random_start: bool = False
    restarts: int = Field(1, ge=1, le=100)

    @property
    def effective_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


class FGSMParams(_EpsAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps (L-inf) or eps along the gradient (L2).
    Native path."""

    id: str = Field("fgsm", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Literal["fgsm"] = "fgsm"


class APGDParams(_EpsAttack):
    """Auto-PGD (Croce & Hein 2020) through ART's AutoProjectedGradientDescent."""

    id: str = Field("apgd", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Literal["apgd"] = "apgd"
    steps: int = Field(100, ge=1, le=10_000)
    restarts: int = Field(1, ge=1, le=100)
    loss: Literal["ce", "dlr"] = "ce"


class SquareParams(_EpsAttack):
    """Square attack (Andriushchenko et al. 2020), query-based and gradient-free, through ART."""

    id: str = Field("square", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Literal["square"] = "square"
    queries: int = Field(1000, ge=1, le=100_000)
    p_init: float = Field(0.8, gt=0, le=1)
    restarts: int = Field(1, ge=1, le=100)


class AutoAttackParams(_EpsAttack):
    """AutoAttack through ART. `composition`: "standard" = APGD-CE, APGD-DLR (untargeted: ART's targeted loop differs
    from APGD-T), Square with 5000 queries; FAB-T is absent from ART. "art" = ART's default list (APGD-CE and
    APGD-DLR with 5 restarts, DeepFool, Square). Either way a perturbation outside the eps-ball does not count."""

    id: str = Field("autoattack", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Literal["autoattack"] = "autoattack"
    composition: Literal["standard", "art"] = "standard"
    square_queries: int = Field(5000, ge=1, le=100_000)


class CWParams(_Strict):
    """Carlini-Wagner L2 (2017) through ART: minimal perturbations; with `eps`, one larger than eps (L2) does not
    count, so robust accuracy is measured at that radius; without, any successful perturbation counts."""

    id: str = Field("cw", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Literal["cw"] = "cw"
    eps: float | None = Field(None, gt=0)
    confidence: float = Field(0.0, ge=0)
    steps: int = Field(10, ge=1, le=10_000)
    binary_search_steps: int = Field(5, ge=1, le=50)
    learning_rate: float = Field(0.01, gt=0)
    initial_const: float = Field(0.01, gt=0)
    seed: int = 0


class DeepFoolParams(_Strict):
    """DeepFool (Moosavi-Dezfooli et al. 2016) through ART: minimal L2 perturbations, thresholded by `eps` as CW."""

    id: str = Field("deepfool", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Literal["deepfool"] = "deepfool"
    eps: float | None = Field(None, gt=0)
    steps: int = Field(50, ge=1, le=10_000)
    overshoot: float = Field(1e-6, ge=0)
    nb_grads: int = Field(10, ge=1)
    seed: int = 0


ATTACKS: dict[str, type[_Strict]] = {c.model_fields["name"].default: c for c in (
    PGDParams, FGSMParams, APGDParams, SquareParams, AutoAttackParams, CWParams, DeepFoolParams)}
AttackParams = Annotated[Union[PGDParams, FGSMParams, APGDParams, SquareParams, AutoAttackParams, CWParams,
                               DeepFoolParams], Field(discriminator="name")]
_ATTACK = TypeAdapter(AttackParams)


def parse_attack(raw: dict) -> PGDParams | FGSMParams:
    """Validate one attack spec; the `name` picks its schema (an unknown name lists the valid ones)."""
    return _ATTACK.validate_python(raw)


# The 15 ImageNet-C corruption types (Hendrycks & Dietterich 2019), implemented in the worker's corruptions/ registry.
CORRUPTION_NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
CorruptionName = Literal[CORRUPTION_NAMES]  # type: ignore[valid-type]


class CorruptionConfig(_Strict):
    names: list[CorruptionName] | Literal["all"] = "all"
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)

    @property
    def resolved_names(self) -> list[str]:
        return list(CORRUPTION_NAMES) if self.names == "all" else list(dict.fromkeys(self.names))


class AuditConfig(_Strict):
    attacks: list[AttackParams] = Field(default_factory=list)
    corruptions: CorruptionConfig | None = None
    max_samples: int | None = Field(None, ge=1, description="per split, class-stratified, seeded")
    seed: int = 0
    batch_size: int = Field(256, ge=1, le=65536)
    compile: Literal["auto", "on", "off"] = Field("auto", description="torch.compile on CUDA (auto: large audits)")

    @model_validator(mode="after")
    def _check(self):
        ids = [a.id for a in self.attacks]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"attack ids must be unique; repeated: {sorted(dup)}")
        if self.corruptions is not None and not self.corruptions.resolved_names:
            raise ValueError(f"corruptions.names is empty; valid names: {list(CORRUPTION_NAMES)}")
        return self


# ------------------------------------------------------------------------------------------------------ datasets

# Built-in datasets that need no upload: sklearn's bundled digits (8x8 grey, 10 classes). The split is fixed and
# documented: sample i goes to the test split when i % 4 == 0 (450 images), else to train (1347 images).
BUILTIN_DATASETS: dict[str, dict] = {
    "builtin:digits-train": {"n": 1347, "shape": [1, 8, 8], "num_classes": 10},
    "builtin:digits-test": {"n": 450, "shape": [1, 8, 8], "num_classes": 10},
}
