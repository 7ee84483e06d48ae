"""The audit's batch size from the input size and the memory free on the device.

A PGD step holds, per image, the input, its adversarial copy and its gradient (a few values per input value) and,
above all, the activations the forward pass keeps for the backward. Those grow with the input's size, so a batch that
fits 32x32 images runs out of memory at 224x224. The estimate is deliberately simple and conservative:
BYTES_PER_INPUT_VALUE bytes per value of one input (C x H x W), which covers a ResNet-50's saved fp32 activations
with room to spare, budgeted against SAFETY_FRACTION of the free memory (less the weights, when their count is
given). The result is rounded down to a power of two and clamped to [MIN_BATCH, MAX_BATCH]; it depends only on its
arguments and the free memory reported, so the same free memory gives the same batch size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MIN_BATCH, MAX_BATCH = 8, 512
BYTES_PER_INPUT_VALUE = 1024  # activations kept for the backward, plus input, adversarial copy and gradient
SAFETY_FRACTION = 0.5  # of the free memory: the allocator's fragmentation, other tenants, the rest of the job
WEIGHT_COPIES = 2  # 4-byte weights resident twice (the eager model and a folded or compiled copy)
FALLBACK_FREE_BYTES = 2 * 1024**3  # when nothing says how much is free
MEMINFO = Path("/proc/meminfo")


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free on `device`: CUDA's own count (torch.cuda.mem_get_info); on a CPU Linux's MemAvailable, else
    psutil's available memory when psutil is installed; else FALLBACK_FREE_BYTES."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception as e:  # noqa: BLE001 - no usable CUDA: be conservative rather than fail the audit
            log.warning("torch.cuda.mem_get_info failed (%s); assuming %d bytes free", e, FALLBACK_FREE_BYTES)
            return FALLBACK_FREE_BYTES
    if device.type == "cpu":
        try:
            for line in MEMINFO.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
        except (OSError, ValueError, IndexError):
            pass
        try:
            import psutil

            return int(psutil.virtual_memory().available)
        except Exception:  # noqa: BLE001 - psutil is optional (not installed, or no reading on this platform)
            pass
    return FALLBACK_FREE_BYTES


def auto_batch_size(input_shape: tuple[int, int, int], device: torch.device, n_params: int | None = None) -> int:
    """A power of two in [MIN_BATCH, MAX_BATCH] for PGD on inputs of `input_shape` (C, H, W) on `device`: the
    largest whose estimated footprint (BYTES_PER_INPUT_VALUE per input value) fits SAFETY_FRACTION of the free
    memory less the model's weights (`n_params` 4-byte values, WEIGHT_COPIES times, when given)."""
    values = 1
    for d in input_shape:
        values *= max(1, int(d))
    budget = SAFETY_FRACTION * free_memory_bytes(device) - WEIGHT_COPIES * 4 * (n_params or 0)
    fits = int(budget // (BYTES_PER_INPUT_VALUE * values)) if budget > 0 else 0
    if fits < MIN_BATCH:
        return MIN_BATCH
    return min(MAX_BATCH, 1 << (fits.bit_length() - 1))
