"""The interface every edit method implements: `EditMethod[ItsParams]`, found through its params class's `impl`.

A method is `class BiasShift(EditMethod[BiasShiftParams])` with `apply(self, ctx: EditContext[BiasShiftParams])`, so
a type checker sees `ctx.params`' fields. This module imports no torch at import time (torch only inside functions
and for type checking): a one-file plugin subclasses `EditMethod` next to its params and the API, which has no
torch, imports that file too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from editaudit.contracts.edits import EditParams, parse_hyperparams
from editaudit.worker.ml.impl import resolve

if TYPE_CHECKING:
    import torch

    from editaudit.worker.ml.archs.registry import Normalized
    from editaudit.worker.ml.data import TensorDataset

Progress = Callable[[str, int, int], None]
P = TypeVar("P", bound=EditParams)


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _no_memo(name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    return compute()


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclass
class EditContext(Generic[P]):
    """What a method gets: the model to edit (a copy; the original stays untouched), the data, its params (typed:
    `EditContext[FinetuneParams]`) and a progress hook."""

    model: Normalized  # the wrapper; layer names refer to model.net
    edit_set: TensorDataset
    layers: list[str]
    params: P
    device: torch.device = field(default_factory=_cpu)
    progress: Progress = _no_progress
    # other splits (generalization, test) and the datasets the params name, by role (locality, reference)
    reference: dict[str, TensorDataset] = field(default_factory=dict)
    # the edited models of earlier edits the params name, by field (the params' edit_ref_fields)
    linked_models: dict[str, Normalized] = field(default_factory=dict)
    # memo(name, compute): statistics worth keeping across edits of the same model and reference data (rewrite's
    # second moment); the job layer backs it with the object store, the ML core on its own just computes
    memo: Callable[[str, Callable[[], torch.Tensor]], torch.Tensor] = _no_memo

    @property
    def layer(self) -> str:
        """The one layer of a single-layer method (run_edit checked there is exactly one)."""
        return self.layers[0]


@dataclass
class EditResult:
    model: Normalized
    changed: list[str]  # state_dict keys (of model.net) whose values the edit changed
    info: dict = field(default_factory=dict)
    audit: dict = field(default_factory=dict)  # sections the method adds to the audit (its params' audit_sections)


class EditMethod(Generic[P]):
    """An edit method, generic in its params: `class Finetune(EditMethod[FinetuneParams])`. Its params class names
    it (`impl = "editaudit.worker.ml.edits.finetune:Finetune"`); there is no other registration."""

    def apply(self, ctx: EditContext[P]) -> EditResult:  # pragma: no cover - interface
        raise NotImplementedError


def edit_notes(info: dict) -> list[str]:
    """What the edit's own record says a reader of its audit must know: a method's warning (rewrite inside a
    residual block), and a gradient edit the trust region stopped before it fixed its edit set."""
    notes = [f"edit: {info['warning']}"] if info.get("warning") else []
    if info.get("stopped") == "locality":
        notes.append(f"edit: the trust region stopped it after {info.get('steps')} steps "
                     f"({info.get('rejected_steps')} undone): a further step changed more than max_locality_change "
                     f"of the locality set's predictions, so the edit set may not be fixed (see edit.accuracy)")
    return notes


def edit_method(params: EditParams | type[EditParams]) -> type[EditMethod]:
    """The implementation of these params (their class's `impl`, imported on first use; ImplementationError if it
    cannot be)."""
    return resolve(params if isinstance(params, type) else type(params), EditMethod)


def numerical_rank(delta: torch.Tensor) -> int:
    """rank of a weight change [out, ...] (flattened to 2-D) at float32 resolution: singular values above
    max(shape) * eps(float32) * the largest one. Through the Gram matrix of the smaller side (an eigvalsh of at most
    out x out), which is far cheaper than an SVD of the full matrix on CPU."""
    import torch

    m = delta.detach().flatten(1).double().cpu()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    sv = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    if sv.numel() == 0 or float(sv.max()) == 0.0:
        return 0
    return int((sv > sv.max() * max(m.shape) * torch.finfo(torch.float32).eps).sum())


def changed_keys(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    import torch

    return [k for k in before if not torch.equal(before[k], after[k])]


def run_edit(method: str, model: Normalized, edit_set: TensorDataset, layers: list[str],
             hyperparams: dict | EditParams, device: torch.device | str = "cpu", progress: Progress = _no_progress,
             reference: dict[str, TensorDataset] | None = None, linked_models: dict[str, Normalized] | None = None,
             memo: Callable[[str, Callable[[], torch.Tensor]], torch.Tensor] = _no_memo) -> EditResult:
    """Edit a deep copy of `model` and check the result is finite. `hyperparams` may be a raw dict (validated here)
    or the method's params already validated."""
    import torch

    params = hyperparams if isinstance(hyperparams, EditParams) else parse_hyperparams(method, hyperparams)
    implementation = edit_method(params)
    if params.single_layer and len(layers) != 1:
        raise ValueError(f"{method} edits exactly one layer; got layers = {list(layers)}")
    names = dict(model.net.named_modules())
    for layer in layers:  # a layer, or a block of them (all its parameters, for the methods that take many)
        if layer not in names or not any(True for _ in names[layer].parameters()):
            raise ValueError(f"unknown layer {layer!r}")
    if len(edit_set) == 0:
        raise ValueError("the edit set is empty")
    device = torch.device(device)
    work = copy.deepcopy(model).to(device)
    before = {k: v.detach().clone() for k, v in work.net.state_dict().items()}
    ctx = EditContext(work, edit_set, list(layers), params, device, progress, reference or {},
                      {k: m.to(device) for k, m in (linked_models or {}).items()}, memo)
    result = implementation().apply(ctx)
    after = result.model.net.state_dict()
    bad = [k for k, v in after.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"the edit produced NaN/inf weights in {bad[0]!r}; try a smaller lr")
    result.changed = changed_keys(before, after)
    return result
