"""Device preparation for the audit's native path: fp32 eager on CPU; on CUDA channels_last, bf16 autocast (in the
attacks) and, for large audits, `torch.compile`. Parameters are frozen, so attacks compute input gradients only."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)
COMPILE_MIN_SAMPLES = 2048


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.dim() == 4 else x


def prepare_model(model: nn.Module, device: torch.device, compile_mode: str, n_samples: int):
    """(eager, fast): the frozen eval-mode model, and the same possibly compiled for the native path."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if device.type != "cuda":
        return model, model
    model = model.to(memory_format=torch.channels_last)
    want = compile_mode == "on" or (compile_mode == "auto" and n_samples >= COMPILE_MIN_SAMPLES)
    if not want:
        return model, model
    try:
        return model, CompiledOrEager(torch.compile(model), model)
    except Exception as e:  # noqa: BLE001 - compile is an optimisation; eager is always correct
        log.warning("torch.compile unavailable (%s); running eager", e)
        return model, model


class CompiledOrEager:
    """torch.compile is lazy: its errors (no triton, no compiler) surface at the first call. Fall back to eager
    then, once, instead of failing the audit."""

    def __init__(self, compiled, eager: nn.Module):
        self.compiled, self.eager, self.failed = compiled, eager, False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self.compiled(x)
            except Exception as e:  # noqa: BLE001
                log.warning("torch.compile failed at run time (%s); running eager", e)
                self.failed = True
        return self.eager(x)
