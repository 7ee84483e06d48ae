"""Caches in the object store, keyed by content addresses of what they depend on: the baseline's per-sample
evaluation (later edits of the same model only evaluate the candidate) and the ML core's memo (rewrite's second
moment). A cache entry that cannot be read is recomputed; a cache that cannot be written is skipped."""

from __future__ import annotations

import hashlib
import json
import logging
import platform

import numpy as np
import safetensors.torch
import torch

import editaudit
from editaudit.core.storage import ObjectStore, content_key

log = logging.getLogger(__name__)


def versions() -> dict:
    """The library versions a result depends on (recorded with every audit and part of every cache key)."""
    import art
    import torchvision

    return {"editaudit": editaudit.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "art": art.__version__, "numpy": np.__version__, "python": platform.python_version()}


def ident_hash(ident: dict) -> str:
    """A content address for a JSON-able identity (keys sorted, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def baseline_cache_key(tenant: str, model_sha: str, spec: dict, datasets: dict[str, str | None], config: dict,
                       device: str) -> str:
    """(tenant, model sha256 + spec, dataset identities, audit config, device type, library versions) -> an object
    key. The spec carries the normalisation; the device type decides RNG streams and precision (bf16 on CUDA). The
    tenant: an audit says whether its baseline came from the cache (`baseline_cached`), so a cache shared across
    tenants would tell B that A audited the same model on the same data; each tenant has its own entries."""
    return content_key("cache/baseline", ident_hash({"tenant": tenant, "model": model_sha, "spec": spec,
                                                     "datasets": datasets, "config": config, "device": device,
                                                     "versions": versions()}), ".json")


def cache_get(store: ObjectStore, key: str, decode):
    """A cache entry decoded, or None when absent or the store cannot be read (a cache is an optimisation: never
    fatal); an undecodable entry is deleted, to be recomputed."""
    try:
        data = store.get(key)
    except KeyError:
        return None
    except Exception:  # noqa: BLE001 - the store is down: compute instead
        log.warning("could not read the cache entry %s; computing it", key, exc_info=True)
        return None
    try:
        return decode(data)
    except Exception:  # noqa: BLE001 - a bad entry is recomputed and overwritten
        log.warning("ignoring unreadable cache entry %s", key, exc_info=True)
        try:
            store.delete(key)
        except Exception:  # noqa: BLE001
            log.warning("could not delete the cache entry %s", key, exc_info=True)
        return None


def cache_put(store: ObjectStore, key: str, data: bytes) -> None:
    """Write a cache entry; a failure is logged, never fatal (caches are an optimisation)."""
    try:
        store.put(key, data)
    except Exception:  # noqa: BLE001
        log.warning("could not write the cache entry %s", key, exc_info=True)


class StoreMemo:
    """Backs the ML core's `memo(name, compute)` with the object store: a tensor is kept under a content address of
    (tenant, model sha + spec, device type, library versions, name) — the name carries the identity of the data it
    was computed on — so every later edit of the same model by the same tenant reuses it (an edit's `info.memo`
    lists hits: shared across tenants, it would reveal another tenant's work)."""

    def __init__(self, store: ObjectStore, ident: dict):
        self.store, self.ident = store, ident
        self.report: dict[str, list[str]] = {"hits": [], "misses": []}

    def __call__(self, name: str, compute):
        key = content_key("cache/memo", ident_hash({**self.ident, "name": name}), ".safetensors")
        value = cache_get(self.store, key, lambda data: safetensors.torch.load(data)["value"])
        if value is not None:
            self.report["hits"].append(name)
            return value
        value = compute()
        self.report["misses"].append(name)
        cache_put(self.store, key, safetensors.torch.save({"value": value.detach().cpu().contiguous()}))
        return value
