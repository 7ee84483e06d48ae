"""Attack params: one class per attack, registered by the `name` users write in `audit.attacks[].name`.

A params class carries its traits, so the API, the runner and the reports never branch on an attack's name:
`native` (our batched on-device path, which may run a compiled model; the others go through ART on the eager module),
`norm_bounded` (has `eps`, `norm` and `eps_sweep`), and `note()` (what a report reader must know about how the
number was produced). The params class is the attack's one registration: `impl = "package.module:Class"` in its body
names the implementation (an `Attack[ThisParams]`), which the worker imports on first use and checks at start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BeforeValidator, Field, GetJsonSchemaHandler, SerializeAsAny, field_validator, model_validator
from pydantic_core import CoreSchema

from editaudit.contracts.registry import Registry, Seed, Strict, check_impl

ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"  # an id is a part of metric names: <split>.adv.<id>.accuracy


class AttackParams(Strict):
    """Base of every attack's params. `id` names the attack in metric names; `name` picks the implementation."""

    impl: ClassVar[str]  # "package.module:Class", the worker's Attack[ThisParams]; set in each class body
    native: ClassVar[bool] = False
    norm_bounded: ClassVar[bool] = False

    id: str = Field(None, pattern=ID_PATTERN, validate_default=False,  # type: ignore[assignment]  # _default_id sets it
                    description="metric name part: <split>.adv.<id>.accuracy (default: the attack's name)")
    name: str
    seed: Seed = 0

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: Any) -> Any:
        """Without an `id`, an attack is named by its `name` (the first PGD of an audit is `pgd`)."""
        if isinstance(data, dict) and data.get("id") is None:
            data = {**data, "id": cls.model_fields["id"].default or cls.model_fields["name"].default}
        return data

    def radii(self) -> Sequence[float | None]:
        """The radii this attack is run at: its own first (that is the metric), then any sweep (None: unbounded)."""
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

    # What the gate and the reports ask of an attack (AttackSelector.matches, describe()): each class answers by its
    # own rules; None means "not defined for this attack", which a policy's floor never accepts.

    def ball_norm(self) -> str | None:
        """The norm of the ball its perturbations stay in ("inf" or "2"); None when it has no such bound."""
        return None

    def radius(self) -> float | None:
        """The radius its metric is measured at; None when unbounded."""
        return None

    def iterations(self) -> int | None:
        """Gradient steps of one run (per restart and radius); None for attacks that do not take steps (query-based
        or composite ones)."""
        return None

    def restart_count(self) -> int:
        """Runs per input; an input counts as robust only if every run fails."""
        return 1

    def travel(self) -> float | None:
        """How far its steps can carry it, in radii: the sum of its nominal step sizes (before projection and
        momentum) over eps, by its own step rule. None where no fixed step rule exists (query-based, composite and
        minimal-perturbation attacks): then a policy's `min_travel` does not match it."""
        return None

    def describe(self) -> str:
        """One line for reports and gate messages: the id, the attack and the facts above."""
        facts = []
        if (norm := self.ball_norm()) is not None:
            facts.append(f"L{norm}")
        if (r := self.radius()) is not None:
            facts.append(f"eps {r:g}")
        elif self.ball_norm() is not None:
            facts.append("unbounded")
        if (n := self.iterations()) is not None:
            facts.append(f"{n} step" + ("s" if n != 1 else ""))
        if self.restart_count() > 1:
            facts.append(f"{self.restart_count()} restarts")
        if (t := self.travel()) is not None:
            facts.append(f"travel {t:.3g} x eps")
        return f"{self.id} ({self.name}" + (f": {', '.join(facts)})" if facts else ")")


ATTACK_PARAMS: Registry[AttackParams] = Registry("attack", "name")
A = TypeVar("A", bound=AttackParams)


def register_attack_params(cls: type[A]) -> type[A]:
    """Class decorator: register a params class under its `name` field's default; its body names the
    implementation (`impl = "package.module:Class"`)."""
    name = cls.model_fields["name"].default
    check_impl(cls, "attack", name)
    ATTACK_PARAMS.register(name, cls)
    return cls


def _norm_alias(v: Any) -> Any:
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

    def ball_norm(self) -> str:
        return self.norm

    def radius(self) -> float:
        return self.eps

    def at_eps(self, eps: float) -> EpsAttack:
        """The same attack at another radius; an explicit step size scales with eps."""
        update = {"eps": eps}
        step_size = getattr(self, "step_size", None)
        if step_size is not None and self.eps > 0:
            update["step_size"] = step_size * eps / self.eps
        return self.model_copy(update=update)


@register_attack_params
class PGDParams(EpsAttack):
    """Projected gradient descent (Madry et al. 2018), untargeted, cross-entropy against the split's labels.
    Native path (batched, on device). With `restarts` > 1 an input counts as robust only if every restart fails."""

    native: ClassVar[bool] = True

    impl = "editaudit.worker.ml.audit.attacks.pgd:PGD"
    name: Literal["pgd"] = "pgd"
    steps: int = Field(10, ge=1, le=10_000)
    step_size: float | None = Field(None, gt=0, description="default 2.5 * eps / steps")
    random_start: bool = False
    restarts: int = Field(1, ge=1, le=100)

    @property
    def effective_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def iterations(self) -> int:
        return self.steps

    def restart_count(self) -> int:
        return self.restarts

    def travel(self) -> float:
        """steps x step size / eps: 2.5 with the default step size, whatever the number of steps."""
        return self.steps * self.effective_step_size / self.eps


@register_attack_params
class FGSMParams(EpsAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps (L-inf) or eps along the gradient (L2).
    Native path."""

    native: ClassVar[bool] = True

    impl = "editaudit.worker.ml.audit.attacks.pgd:FGSM"
    name: Literal["fgsm"] = "fgsm"

    def iterations(self) -> int:
        return 1

    def travel(self) -> float:
        """One step of eps: exactly the radius."""
        return 1.0


@register_attack_params
class APGDParams(EpsAttack):
    """Auto-PGD (Croce & Hein 2020) through ART's AutoProjectedGradientDescent."""

    impl = "editaudit.worker.ml.audit.attacks.art_attacks:APGD"
    name: Literal["apgd"] = "apgd"
    steps: int = Field(100, ge=1, le=10_000)
    restarts: int = Field(1, ge=1, le=100)
    loss: Literal["ce", "dlr"] = "ce"

    @property
    def initial_step_size(self) -> float:
        """ART's `eps_step` as the worker sets it: 2 eps (Croce & Hein's initial step)."""
        return 2 * self.eps

    def iterations(self) -> int:
        return self.steps

    def restart_count(self) -> int:
        return self.restarts

    def travel(self) -> float:
        """APGD's own step rule (ART's AutoProjectedGradientDescent): the step starts at 2 eps and may be halved at
        each checkpoint of its schedule, depending on the loss. Travel is the guaranteed part: the nominal step
        sizes summed as if it were halved at every checkpoint (a lower bound, so a policy's min_travel is never met
        by steps APGD may not take). One step already carries it 2 radii; 100 steps about 78."""
        step, total, checkpoints = self.initial_step_size, 0.0, set(apgd_checkpoints(self.steps))
        for k in range(self.steps):
            total += step
            if k > 0 and k in checkpoints:  # ART checks for a halving after every iteration but the first
                step /= 2
        return total / self.eps


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations after which ART's APGD may halve its step: ceil(p_j * steps) with p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) while <= 1 (Croce & Hein 2020, as ART computes it)."""
    p = [0.0, 0.22]
    while (nxt := p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)) <= 1:
        p.append(nxt)
    return [math.ceil(x * steps) for x in p]


@register_attack_params
class SquareParams(EpsAttack):
    """Square attack (Andriushchenko et al. 2020), query-based and gradient-free, through ART."""

    impl = "editaudit.worker.ml.audit.attacks.art_attacks:Square"
    name: Literal["square"] = "square"
    queries: int = Field(1000, ge=1, le=100_000)
    p_init: float = Field(0.8, gt=0, le=1)
    restarts: int = Field(1, ge=1, le=100)

    def restart_count(self) -> int:
        return self.restarts


@register_attack_params
class AutoAttackParams(EpsAttack):
    """AutoAttack through ART. `composition`: "standard" = APGD-CE, APGD-DLR (untargeted: ART's targeted loop differs
    from APGD-T), Square with 5000 queries; FAB-T is absent from ART. "art" = ART's default list (APGD-CE and
    APGD-DLR with 5 restarts, DeepFool, Square). Either way a perturbation outside the eps-ball does not count."""

    impl = "editaudit.worker.ml.audit.attacks.art_attacks:AutoAttack"
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

    def ball_norm(self) -> str:
        return self.norm

    def radius(self) -> float | None:
        return self.eps

    def note(self) -> str:
        return f"{self.id}: minimal-perturbation attack" + (
            f"; only perturbations with L2 <= {self.eps:g} count" if self.eps else "; unbounded")


@register_attack_params
class CWParams(MinimalL2Attack):
    """Carlini-Wagner L2 (2017) through ART: minimal perturbations, thresholded by `eps` when given."""

    impl = "editaudit.worker.ml.audit.attacks.art_attacks:CarliniWagner"
    name: Literal["cw"] = "cw"
    confidence: float = Field(0.0, ge=0)
    steps: int = Field(10, ge=1, le=10_000)
    binary_search_steps: int = Field(5, ge=1, le=50)
    learning_rate: float = Field(0.01, gt=0)
    initial_const: float = Field(0.01, gt=0)

    def iterations(self) -> int:
        """Optimiser steps per binary-search step (its travel is undefined: Adam on a penalised loss)."""
        return self.steps


@register_attack_params
class DeepFoolParams(MinimalL2Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016) through ART: minimal L2 perturbations, thresholded by `eps` as CW."""

    impl = "editaudit.worker.ml.audit.attacks.art_attacks:DeepFool"
    name: Literal["deepfool"] = "deepfool"
    steps: int = Field(50, ge=1, le=10_000)
    overshoot: float = Field(1e-6, ge=0)
    nb_grads: int = Field(10, ge=1)

    def iterations(self) -> int:
        """Linearisation steps at most (its travel is undefined: each step goes to the nearest boundary)."""
        return self.steps


class _RegisteredAttacks:
    """JSON schema of an attack spec: oneOf the registered params classes, computed when a schema is generated."""

    @classmethod
    def __get_pydantic_json_schema__(cls, _core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return ATTACK_PARAMS.json_schema(handler)


AttackSpec = Annotated[SerializeAsAny[AttackParams], BeforeValidator(ATTACK_PARAMS.parse_tagged), _RegisteredAttacks]


def parse_attack(raw: dict[str, Any]) -> AttackParams:
    """Validate one attack spec; the `name` picks its schema (an unknown name lists the valid ones)."""
    return ATTACK_PARAMS.parse_tagged(raw)
