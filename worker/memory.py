"""How a worker process uses the machine: its torch thread count (`set_threads`) and a steady allocator.

Threads: torch defaults to one thread per core it sees; workers that share a host's cores (several workers, or a
worker beside the API) then oversubscribe them: on a 2-core VM beside one busy neighbour process, 2-thread PGD
fell to 0.37-0.60x of 1-thread speed (issue 21's measurement). `EDITAUDIT_TORCH_THREADS` sets each worker's share.

Allocator: batch-sized tensors (tens to hundreds of MB) are allocated and freed every
batch. glibc raises its mmap threshold each time such a block is freed (up to 32 MiB), after which blocks below it
come from the heap, where freed ones fragment and stay resident: measured on the ingest bench, a streaming audit's
RSS grew with the number of batches (1.4 GB at 20 000 images, 4.7 GB at 80 000) though it holds one batch at a
time. A fixed threshold of 1 MiB (which also turns the dynamic adjustment off) hands large blocks back on free:
flat at ~1.05 GB for 24 000 images, the same figure as for 8 000."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 20


def steady_allocator() -> bool:
    """Set glibc's mmap and trim thresholds for this process (and the ones it forks). False where there is no
    glibc (macOS, musl): nothing to do there."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    if not ok:
        log.debug("mallopt refused the thresholds; the allocator keeps its defaults")
    return ok


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads for this process (None: leave torch's default); returns the count in effect."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
