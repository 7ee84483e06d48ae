"""Every timm model as `timm/<name>` (`timm.list_models()`, a pretrained tag allowed: `timm/resnet18.a1_in1k`), built
with `timm.create_model(name, pretrained=False, num_classes=..., in_chans=...)`. Nothing is downloaded: users upload
their own state_dict, and the defaults (input size, normalisation, crop) come from timm's pretrained config tables,
which ship with timm.

The ~1200 names are a family resolved by prefix, not entries of ARCHS: the API's manifest lists ARCHS only, and a
timm checkpoint is checked by a worker (`inspect.inspect_model`).
"""

from __future__ import annotations

import math
from functools import lru_cache

from torch import nn

from editaudit.worker.ml.archs.registry import register_family

PREFIX = "timm/"


def exists(name: str) -> bool:
    import timm  # lazy: importing timm costs a second, and only jobs on timm models need it

    return bool(timm.is_model(name))


def build(name: str, spec: dict) -> nn.Module:
    import timm

    if not exists(name):
        raise KeyError(f"unknown architecture {PREFIX + name!r}: not a timm model name (timm.list_models())")
    shape = [int(d) for d in spec["input_shape"]]
    kwargs: dict = {"pretrained": False, "num_classes": int(spec["num_classes"]), "in_chans": shape[0]}
    cfg = pretrained_defaults(name)
    if cfg["fixed_input_size"] and list(cfg["input_size"][1:]) != shape[1:]:
        kwargs["img_size"] = tuple(shape[1:])  # position embeddings and windows follow the input size
    return timm.create_model(name, **kwargs)


@lru_cache(maxsize=256)
def _cfg(name: str) -> dict:
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is not None:
        return cfg.to_dict()
    import torch

    with torch.device("meta"):  # a model without a pretrained entry: its default config, built for nothing
        net = timm.create_model(name, pretrained=False)
    return dict(getattr(net, "pretrained_cfg", None) or {})


def pretrained_defaults(name: str) -> dict:
    """timm's pretrained config for `name` without a download: input_size [C, H, W], mean, std, crop_pct,
    crop_mode, interpolation, num_classes, fixed_input_size, class_names (timm's label names, rarely set)."""
    cfg = _cfg(name)
    size = cfg.get("input_size") or (3, 224, 224)
    return {"input_size": [int(d) for d in size],
            "mean": [float(v) for v in cfg["mean"]] if cfg.get("mean") is not None else None,
            "std": [float(v) for v in cfg["std"]] if cfg.get("std") is not None else None,
            "crop_pct": float(cfg.get("crop_pct") or 0.875), "crop_mode": cfg.get("crop_mode") or "center",
            "interpolation": cfg.get("interpolation") or "bilinear",
            "num_classes": int(cfg["num_classes"]) if cfg.get("num_classes") else None,
            "fixed_input_size": bool(cfg.get("fixed_input_size", False)),
            "class_names": list(cfg["label_names"]) if cfg.get("label_names") else None}


def preprocess(crop: list[int], crop_pct: float, crop_mode: str, interpolation: str) -> dict:
    """timm's eval transform (`resolve_data_config` + `create_transform`) in the resolved spec's terms: resize the
    shorter side to floor(crop / crop_pct), centre-crop `crop`; crop_mode "squash" resizes to [h, w] / crop_pct
    outright (`resize_exact`; `resize` then holds the nearest aspect-keeping equivalent)."""
    h, w = crop
    if crop_mode == "squash":
        resize_to = [math.floor(h / crop_pct), math.floor(w / crop_pct)]
        return {"resize": max(resize_to), "resize_exact": resize_to, "crop": [h, w], "interpolation": interpolation}
    return {"resize": math.floor(min(h, w) / crop_pct), "resize_exact": None, "crop": [h, w],
            "interpolation": interpolation}


def defaults(name: str, spec: dict) -> dict:
    cfg = pretrained_defaults(name)
    shape = [int(d) for d in spec.get("input_shape") or cfg["input_size"]]
    return {"input_shape": cfg["input_size"], "num_classes": cfg["num_classes"], "mean": cfg["mean"],
            "std": cfg["std"], "class_names": cfg["class_names"],
            "preprocess": preprocess(shape[1:], cfg["crop_pct"], cfg["crop_mode"], cfg["interpolation"])}


register_family(PREFIX, build, exists=exists, defaults=defaults,
                about="any timm model name (timm.list_models()), built with pretrained=False")
