"""Hugging Face image classifiers as `hf/<model_type>`, built from the `config.json` the spec carries.

spec = {"arch": "hf/vit", "config": {...config.json...}, "preprocessor": {...preprocessor_config.json...}?, ...}

The config is read by its model type's own config class (`from_dict`, as `from_pretrained` reads a config.json) and
the model built with `AutoModelForImageClassification.from_config`: no hub, no download, never remote code (an
`auto_map` in the config is dropped). Only model types that `AutoModelForImageClassification` maps and whose forward
takes `pixel_values` are accepted. The network is the Hugging Face model itself (keys `vit.embeddings...`,
`classifier.weight`); `Normalized` takes the `.logits` of its output.

Checkpoint layouts. Recent transformers rename some models' modules (ViT's `encoder.layer.N.intermediate.dense` is
`layers.N.mlp.fc1`) and convert older checkpoints when they load them. `load` does the same for renamings: a
checkpoint in the layout `save_pretrained` writes is checked in its own key names, then loaded; `checkpoint_state`
maps an (edited) state_dict back to that layout.
"""

from __future__ import annotations

import inspect as pyinspect
from functools import lru_cache

import torch
from torch import nn

from editaudit.worker.ml.archs.registry import check_state_dict, load_state_dict_strict, register_family

PREFIX = "hf/"
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_DROP = ("auto_map", "_name_or_path", "transformers_version")  # never remote code; provenance is not config


@lru_cache(maxsize=1)
def _classifier_types() -> dict[str, str | tuple[str, ...]]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    return {k: v if isinstance(v, str) else tuple(v) for k, v in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items()}


@lru_cache(maxsize=64)
def _takes_pixel_values(model_type: str) -> bool:
    import transformers

    names = _classifier_types()[model_type]  # a tuple where config.architectures picks one (DeiT's teacher head)
    classes = [getattr(transformers, n, None) for n in ([names] if isinstance(names, str) else names)]
    return all(c is not None and "pixel_values" in pyinspect.signature(c.forward).parameters for c in classes)


def exists(model_type: str) -> bool:
    return model_type in _classifier_types() and _takes_pixel_values(model_type)


def _check_type(model_type: str) -> None:
    if not exists(model_type):
        known = sorted(t for t in _classifier_types() if _takes_pixel_values(t))
        raise ValueError(f"hf/{model_type}: model_type {model_type!r} is not an image classifier that "
                         f"AutoModelForImageClassification builds from pixel_values; known: {known}")


def config_of(model_type: str, spec: dict):
    """The config class of `model_type` read from spec["config"] (a config.json dict)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    _check_type(model_type)
    raw = spec.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"hf/{model_type} needs the model's config.json as spec['config'] (a JSON object)")
    declared = raw.get("model_type", model_type)
    if declared != model_type:
        raise ValueError(f"arch hf/{model_type} names model_type {model_type!r}, config.json says {declared!r}")
    # private keys (`_attn_implementation` can name a hub kernel to download) and attn_implementation stay out: the
    # config describes the network, never how or where from its code is fetched
    data = {k: v for k, v in raw.items() if k not in _DROP and not k.startswith("_") and k != "attn_implementation"}
    data["model_type"] = model_type
    try:
        return CONFIG_MAPPING[model_type].from_dict(data)
    except Exception as exc:  # noqa: BLE001 - any config the class refuses: the user's error, said as such
        raise ValueError(f"hf/{model_type}: config.json does not read as a {model_type} config: {exc}") from exc


def build(model_type: str, spec: dict) -> nn.Module:
    import transformers
    from transformers import AutoModelForImageClassification

    cfg = config_of(model_type, spec)
    shape = [int(d) for d in spec["input_shape"]]
    channels = getattr(cfg, "num_channels", None)
    if channels is not None and int(channels) != shape[0]:
        raise ValueError(f"config.json has num_channels = {channels}, input_shape has {shape[0]}")
    cfg.return_dict = True  # outputs by name (some models' forward needs it; Normalized reads `.logits`)
    names = _classifier_types()[model_type]
    if not isinstance(names, str) and not getattr(cfg, "architectures", None):
        cfg.architectures = [names[0]]  # where transformers picks among heads by it (DeiT, LeViT): the plain one
    num_classes = int(spec["num_classes"])
    if cfg.num_labels != num_classes:
        cfg.num_labels = num_classes  # id2label becomes LABEL_0..: class names come from the resolved spec
    dtype = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": torch.float32}
    return AutoModelForImageClassification.from_config(cfg, trust_remote_code=False, **dtype)  # not config.dtype


def class_names(cfg) -> list[str] | None:
    """id2label ordered by index; None when they are transformers' placeholders (LABEL_0, LABEL_1, ...)."""
    labels = {int(k): str(v) for k, v in (cfg.id2label or {}).items()}
    names = [labels[i] for i in sorted(labels)]
    if sorted(labels) != list(range(len(labels))) or names == [f"LABEL_{i}" for i in range(len(names))]:
        return None
    return names


def _image_processor(model_type: str, pre: dict | None):
    """The model type's image processor built from preprocessor_config.json (its class's defaults without one), or
    None where transformers has none for it or refuses the dict."""
    import transformers
    from transformers.image_processing_utils import BaseImageProcessor
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    known = [*names.values()] if isinstance(names, dict) else [*names] if isinstance(names, (list, tuple)) \
        else [names] if isinstance(names, str) else []
    known = [n for n in known if isinstance(n, str)]
    candidates = list(known)
    declared = (pre or {}).get("image_processor_type")
    # the file's own name is only a preference among the classes transformers maps to this model type: it is data,
    # and a name outside that list (a function of transformers, "pipeline") is never looked up, let alone called
    if isinstance(declared, str) and (declared in known or declared.removesuffix("Fast") in known):
        candidates = [declared, declared.removesuffix("Fast"), *known]
    kwargs = {k: v for k, v in (pre or {}).items() if k not in ("image_processor_type", "processor_class", *_DROP)
              and not k.startswith("_")}
    for name in candidates:
        cls = getattr(transformers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, BaseImageProcessor)):
            continue
        try:
            return cls(**kwargs)
        except Exception:  # noqa: BLE001 - try the next class, then the plain reading of the dict
            continue
    return None


def _hw(size) -> dict:
    if size is None:
        return {}
    if isinstance(size, int):
        return {"height": size, "width": size}
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    return {k: get(k) for k in ("height", "width", "shortest_edge") if get(k) is not None}


def preprocessing(model_type: str, pre: dict | None) -> dict:
    """mean / std for inputs in [0, 1] and the resolved spec's preprocess, from preprocessor_config.json."""
    proc = _image_processor(model_type, pre)
    src = (lambda k, d=None: getattr(proc, k, d)) if proc is not None else (lambda k, d=None: (pre or {}).get(k, d))
    resample = src("resample", 2)
    resample = int(resample) if not isinstance(resample, str) else None
    interpolation = RESAMPLE.get(resample, "bilinear") if resample is not None else str(src("resample"))
    size, crop = _hw(src("size")), _hw(src("crop_size"))
    resize, resize_exact, crop_hw = None, None, None
    if src("do_resize", True) and size:
        if "shortest_edge" in size:
            edge, crop_pct = int(size["shortest_edge"]), src("crop_pct")
            if crop_pct is not None and edge < 384:  # ConvNeXt's processor: resize edge / crop_pct, crop edge
                resize, crop_hw = int(edge / float(crop_pct)), [edge, edge]
            elif crop_pct is not None:
                resize_exact = [edge, edge]
            else:
                resize = edge
        elif "height" in size and "width" in size:
            resize_exact = [int(size["height"]), int(size["width"])]
    if src("do_center_crop", False) and "height" in crop and "width" in crop:
        crop_hw = [int(crop["height"]), int(crop["width"])]
    if resize_exact is not None:  # and, for a reader of `resize` only, the nearest aspect-keeping equivalent
        resize, crop_hw = max(resize_exact), crop_hw or list(resize_exact)
    # HF feeds (pixel * rescale_factor - mean) / std; ours get x = pixel / 255 and apply (x - mean') / std'
    k = 255.0 * float(src("rescale_factor", 1 / 255)) if src("do_rescale", True) else 255.0
    mean, std = src("image_mean"), src("image_std")
    scale = None
    if src("do_normalize", True) and mean is not None and std is not None:
        mean, std = [float(m) / k for m in mean], [float(s) / k for s in std]
    else:
        mean, std = None, None
        scale = 1.0 / k if abs(k - 1.0) > 1e-9 else None  # no normalisation, but not the usual 1/255 either
    return {"mean": mean, "std": std, "scale": scale,
            "preprocess": {"resize": resize, "resize_exact": resize_exact, "crop": crop_hw,
                           "interpolation": interpolation}}


def defaults(model_type: str, spec: dict) -> dict:
    cfg = config_of(model_type, spec)
    size = getattr(cfg, "image_size", None)
    channels = int(getattr(cfg, "num_channels", 3) or 3)
    shape = None
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        shape = [channels, int(h), int(w)]
    pre = preprocessing(model_type, spec.get("preprocessor"))
    mean, std = pre["mean"], pre["std"]
    if pre["scale"] is not None:  # no normalisation, only a rescale other than 1/255
        mean, std = [0.0] * channels, [pre["scale"]] * channels
    preprocess = dict(pre["preprocess"])
    if shape is not None and spec.get("preprocessor") is None:  # the processor class's sizes are not the config's
        preprocess.update(resize=max(shape[1:]), resize_exact=shape[1:], crop=shape[1:])
    elif shape is not None and preprocess["crop"] is None and preprocess["resize_exact"] is None:
        preprocess["crop"] = shape[1:]  # what the model takes
    return {"input_shape": shape, "num_classes": int(cfg.num_labels), "mean": mean, "std": std,
            "class_names": class_names(cfg), "preprocess": preprocess}


# ------------------------------------------------------------------------------------------- checkpoint layouts

def checkpoint_state(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` (the network's key names) in the layout `save_pretrained` writes (older names where transformers
    renamed modules); unchanged for models without renamings."""
    from transformers import PreTrainedModel

    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4: no renamed layouts
        return state
    assert isinstance(net, PreTrainedModel), type(net)
    return revert_weight_conversion(net, dict(state))


def key_map(net: nn.Module) -> dict[str, str] | None:
    """{checkpoint key: network key} where transformers renames this model's keys, None where it does not (or
    converts more than names: merged or split tensors, which are not read here)."""
    own = net.state_dict()
    try:
        saved = checkpoint_state(net, own)
    except Exception:  # noqa: BLE001 - a conversion that cannot run on this state: no other layout is read
        return None
    by_id = {id(v): k for k, v in own.items()}
    mapping = {k: by_id.get(id(v)) for k, v in saved.items()}
    if any(v is None for v in mapping.values()) or len(mapping) != len(own):
        return None
    return None if all(k == v for k, v in mapping.items()) else {k: str(v) for k, v in mapping.items()}


def module_aliases(net: nn.Module) -> dict[str, str]:
    """{module path in the network: its path in the checkpoint layout} for the modules transformers renamed
    (`vit.layers.1.mlp.fc1` -> `vit.encoder.layer.1.intermediate.dense`); {} when nothing is renamed."""
    out: dict[str, str] = {}
    for saved, own in (key_map(net) or {}).items():
        module, leaf = own.rsplit(".", 1) if "." in own else ("", own)
        if saved.endswith("." + leaf) and saved[: -len(leaf) - 1] != module:
            out.setdefault(module, saved[: -len(leaf) - 1])
    return out


def load(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict load of either layout: the network's own keys, or the checkpoint layout (checked in its own names,
    so an error names the key as the user's file has it)."""
    own = net.state_dict()
    mapping = key_map(net) if not set(state) <= set(own) else None
    if mapping is not None and len(set(state) & set(mapping)) > len(set(state) & set(own)):
        check_state_dict({k: own[v] for k, v in mapping.items()}, state)
        net.load_state_dict({mapping[k]: v for k, v in state.items()}, strict=True)
        return
    load_state_dict_strict(net, state)


register_family(PREFIX, build, exists=exists, defaults=defaults, load=load, save=checkpoint_state,
                about="a Hugging Face image classifier by model_type, built from spec['config'] (config.json)")
