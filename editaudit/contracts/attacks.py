"""Attack params: one class per attack, registered by the `name` users write in `audit.attacks[].name`.

A params class carries its traits, so the API, the runner and the reports never branch on an attack's name:
`native` (our batched on-device path, which may run a compiled model; the others go through ART on the eager module),
`norm_bounded` (has `eps`, `norm` and `eps_sweep`), and `note()` (what a report reader must know about how the
number was produced). The worker registers one implementation per name; a parity test keeps the two sets equal.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny, field_validator, model_validator

from editaudit.contracts.registry import Registry, Strict

ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"  # an id is a part of metric names: <split>.adv.<id>.accuracy


class AttackParams(Strict):
    """Base of every attack's params. `id` names the attack in metric names; `name` picks the implementation."""

    native: ClassVar[bool] = False
    norm_bounded: ClassVar[bool] = False

    id: str = Field(None, pattern=ID_PATTERN, validate_default=False,
                    description="metric name part: <split>.adv.<id>.accuracy (default: the attack's name)")
    name: str
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data):
        """Without an `id`, an attack is named by its `name` (the first PGD of an audit is `pgd`)."""
        if isinstance(data, dict) and data.get("id") is None:
            data = {**data, "id": cls.model_fields["id"].default or cls.model_fields["name"].default}
        return data

    def radii(self) -> list[float]:
        """The radii this attack is run at: its own first (that is the metric), then any sweep."""
        return []

    def note(self) -> str | None:
        """A sentence for the audit's notes when how the number is produced needs saying; None when it does not."""
        return None

    def passes_per_image(self) -> int:
        """Forward+backward passes this attack costs per image (its budget share): iterations x restarts x radii,
        from whichever of `steps`, `queries`, `square_queries`, `binary_search_steps`, `restarts` it has."""
        iterations = 1
        for name in ("steps", "queries", "square_queries", "binary_search_steps"):
            iterations *= getattr(self, name, None) or 1
        return iterations * (getattr(self, "restarts", None) or 1) * max(1, len(self.radii()))


ATTACK_PARAMS: Registry[AttackParams] = Registry("attack", "name")


def register_attack_params(cls: type[AttackParams]) -> type[AttackParams]:
    """Class decorator: register a params class under its `name` field's default."""
    return ATTACK_PARAMS.register(cls.model_fields["name"].default, cls)


def _norm_alias(v):
    """Accept the spellings people use for norms: "inf", "linf", np.inf, 2, "2", "l2"."""
    if isinstance(v, str):
        v = v.lower()
    if not isinstance(v, (str, int, float)):
        return v  # let the Literal check reject it with a proper message
    return {"linf": "inf", "l2": "2", 2: "2", math.inf: "inf"}.get(v, v)


class EpsAttack(AttackParams):
    """Norm-bounded attacks. `eps_sweep` adds a robust-accuracy-vs-eps curve to the audit."""

    norm_bounded: ClassVar[bool] = True

    norm: Literal["inf", "2"] = "inf"
    eps: float = Field(0.03, gt=0, description="the radius the metric is measured at (> 0: eps 0 attacks nothing)")
    eps_sweep: list[Annotated[float, Field(ge=0)]] | None = Field(None, max_length=32)

    _norm = field_validator("norm", mode="before")(lambda v: _norm_alias(v))

    def radii(self) -> list[float]:
        return [self.eps, *(self.eps_sweep or [])]

    def at_eps(self, eps: float) -> "EpsAttack":
        """The same attack at another radius; an explicit step size scales with eps."""
        update = {"eps": eps}
        if getattr(self, "step_size", None) is not None and self.eps > 0:
            update["step_size"] = self.step_size * eps / self.eps
        return self.model_copy(update=update)


@register_attack_params
class PGDParams(EpsAttack):
    """Projected gradient descent (Madry et al. 2018), untargeted, cross-entropy against the split's labels.
    Native path (batched, on device). With `restarts` > 1 an input counts as robust only if every restart fails."""

    native: ClassVar[bool] = True

    name: Literal["pgd"] = "pgd"
    steps: int = Field(10, ge=1, le=10_000)
    step_size: float | None = Field(None, gt=0, description="default 2.5 * eps / steps")
    random_start: bool = False
    restarts: int = Field(1, ge=1, le=100)

    @property
    def effective_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


@register_attack_params
class FGSMParams(EpsAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps (L-inf) or eps along the gradient (L2).
    Native path."""

    native: ClassVar[bool] = True

    name: Literal["fgsm"] = "fgsm"


@register_attack_params
class APGDParams(EpsAttack):
    """Auto-PGD (Croce & Hein 2020) through ART's AutoProjectedGradientDescent."""

    name: Literal["apgd"] = "apgd"
    steps: int = Field(100, ge=1, le=10_000)
    restarts: int = Field(1, ge=1, le=100)
    loss: Literal["ce", "dlr"] = "ce"


@register_attack_params
class SquareParams(EpsAttack):
    """Square attack (Andriushchenko et al. 2020), query-based and gradient-free, through ART."""

    name: Literal["square"] = "square"
    queries: int = Field(1000, ge=1, le=100_000)
    p_init: float = Field(0.8, gt=0, le=1)
    restarts: int = Field(1, ge=1, le=100)


@register_attack_params
class AutoAttackParams(EpsAttack):
    """AutoAttack through ART. `composition`: "standard" = APGD-CE, APGD-DLR (untargeted: ART's targeted loop differs
    from APGD-T), Square with 5000 queries; FAB-T is absent from ART. "art" = ART's default list (APGD-CE and
    APGD-DLR with 5 restarts, DeepFool, Square). Either way a perturbation outside the eps-ball does not count."""

    name: Literal["autoattack"] = "autoattack"
    composition: Literal["standard", "art"] = "standard"
    square_queries: int = Field(5000, ge=1, le=100_000)

    def note(self) -> str:
        return (f"{self.id}: ART's AutoAttack, composition '{self.composition}'. "
                + ("APGD-CE + APGD-DLR (untargeted) + Square; the standard cascade's APGD-T is replaced by "
                   "untargeted APGD-DLR and FAB-T is absent (ART has no FAB)." if self.composition == "standard"
                   else "ART's default list: APGD-CE and APGD-DLR (5 restarts each), DeepFool, Square "
                        "(5000 queries, 5 restarts); not the standard APGD-CE, APGD-T, FAB-T, Square."))


class MinimalL2Attack(AttackParams):
    """Minimal-perturbation L2 attacks: with `eps`, a perturbation larger than eps (L2) does not count, so robust
    accuracy is measured at that radius; without, any successful perturbation counts."""

    norm: ClassVar[str] = "2"

    eps: float | None = Field(None, gt=0)

    def radii(self) -> list[float | None]:
        return [self.eps]

    def note(self) -> str:
        return f"{self.id}: minimal-perturbation attack" + (
            f"; only perturbations with L2 <= {self.eps:g} count" if self.eps else "; unbounded")


@register_attack_params
class CWParams(MinimalL2Attack):
    """Carlini-Wagner L2 (2017) through ART: minimal perturbations, thresholded by `eps` when given."""

    name: Literal["cw"] = "cw"
    confidence: float = Field(0.0, ge=0)
    steps: int = Field(10, ge=1, le=10_000)
    binary_search_steps: int = Field(5, ge=1, le=50)
    learning_rate: float = Field(0.01, gt=0)
    initial_const: float = Field(0.01, gt=0)


@register_attack_params
class DeepFoolParams(MinimalL2Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016) through ART: minimal L2 perturbations, thresholded by `eps` as CW."""

    name: Literal["deepfool"] = "deepfool"
    steps: int = Field(50, ge=1, le=10_000)
    overshoot: float = Field(1e-6, ge=0)
    nb_grads: int = Field(10, ge=1)


class _RegisteredAttacks:
    """JSON schema of an attack spec: oneOf the registered params classes, computed when a schema is generated."""

    @classmethod
    def __get_pydantic_json_schema__(cls, _core_schema, handler):
        return ATTACK_PARAMS.json_schema(handler)


AttackSpec = Annotated[SerializeAsAny[AttackParams], BeforeValidator(ATTACK_PARAMS.parse_tagged), _RegisteredAttacks]


def parse_attack(raw: dict) -> AttackParams:
    """Validate one attack spec; the `name` picks its schema (an unknown name lists the valid ones)."""
    return ATTACK_PARAMS.parse_tagged(raw)
