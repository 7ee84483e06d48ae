"""A model upload's spec, checked as far as the torch-free API can: registered architectures in full (shapes from
the manifest, at upload), timm and Hugging Face ones as far as their names and configs go (the worker's ingest job
builds them and checks the weights' shapes).

A Hugging Face config.json is data, never code: a config that asks for remote code (`auto_map`) is refused, and the
worker builds only transformers' own classes from it (`from_config`, no `trust_remote_code`, no download)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from editaudit.core import arch_manifest
from editaudit.service.errors import Problem, validation_problem
from editaudit.service.schemas.models import ModelSpec

MAX_CONFIG_BYTES = 4 * 1024 * 1024
TIMM_NAME = re.compile(r"timm/[a-z0-9_]+(\.[a-z0-9_]+)?")  # timm's names (an optional .tag is stripped by timm)
HF_TYPE = re.compile(r"[a-z0-9_\-]{1,64}")


def json_upload(part, field: str, limit: int = MAX_CONFIG_BYTES) -> dict:
    """A small JSON file part (config.json), its size checked before it is read."""
    f = part.file
    if f.seek(0, 2) > limit:
        raise Problem(413, f"{field} is larger than {limit // 1024} KiB", field=field)
    f.seek(0)
    return parse_json_part(f.read(), field, limit)


def parse_json_part(raw: bytes | str, field: str, limit: int = MAX_CONFIG_BYTES) -> dict:
    if len(raw) > limit:
        raise Problem(413, f"{field} is larger than {limit // 1024} KiB", field=field)
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Problem(422, f"{field} is not valid JSON: {e}", field=field) from None
    if not isinstance(obj, dict):
        raise Problem(422, f"{field} must be a JSON object", field=field)
    return obj


OPTIONAL = ("class_names", "preprocess", "config", "preprocessor")  # left out of a stored spec when not given


def stored_spec(spec: ModelSpec) -> dict:
    """The spec as the row keeps it: what was given (a registered architecture's with mean/std as before, so
    identical uploads from before these fields existed stay identical)."""
    if arch_manifest.worker_checked(spec.arch):
        return spec.model_dump(exclude_none=True)
    return spec.model_dump(exclude={k for k in OPTIONAL if getattr(spec, k) is None})


def parse_spec(raw: str | None, config: dict | None = None, preprocessor: dict | None = None) -> ModelSpec:
    obj: dict[str, Any] = parse_json_part(raw, "spec") if raw else {}
    if config is not None:
        obj = {**_from_hf_config(config, obj), "config": config, **({"preprocessor": preprocessor}
                                                                       if preprocessor is not None else {})}
    elif preprocessor is not None:
        raise Problem(422, "preprocessor_config comes with a Hugging Face config.json", field="preprocessor_config")
    if not obj:
        raise Problem(422, "spec is required (or a Hugging Face config.json as `config`)", field="spec")
    try:
        spec = ModelSpec.model_validate(obj)
    except ValidationError as e:
        raise validation_problem(e, "spec") from None
    _check_arch(spec)
    return spec


def _check_arch(spec: ModelSpec) -> None:
    names = arch_manifest.arch_names()
    if spec.arch in names:
        if spec.config is not None or spec.preprocessor is not None:
            raise Problem(422, f"{spec.arch} is built by editaudit; a config.json is for Hugging Face models",
                          field="config")
        for name in ("num_classes", "input_shape"):
            if getattr(spec, name) is None:
                raise Problem(422, f"{spec.arch} needs spec.{name}", field=f"spec.{name}")
        assert spec.input_shape is not None
        need = arch_manifest.required_channels(spec.arch)
        if need is not None and spec.input_shape[0] != need:
            raise Problem(422, f"{spec.arch} takes {need}-channel inputs; input_shape has {spec.input_shape[0]}",
                          field="spec.input_shape")
        return
    if spec.arch.startswith("timm/"):
        if not TIMM_NAME.fullmatch(spec.arch):
            raise Problem(422, f"{spec.arch!r} is not a timm model name (lower case letters, digits, _ and one "
                               "optional .tag)", field="spec.arch")
        if spec.config is not None:
            raise Problem(422, "timm models are built from their name; a config.json is for Hugging Face models",
                          field="config")
        return
    if spec.arch.startswith("hf/"):
        if spec.config is None:
            raise Problem(422, "a Hugging Face model comes with its config.json (multipart part `config`)",
                          field="config")
        return
    valid = names + [f"{prefix}<name>" for prefix in arch_manifest.WORKER_CHECKED]
    raise Problem(422, f"unknown architecture {spec.arch!r}", field="spec.arch", valid=valid,
                  closest=arch_manifest.closest(spec.arch, names))


def _from_hf_config(config: dict, given: dict) -> dict:
    """The spec fields a config.json implies (arch hf/<model_type>, classes from id2label, input size), under what
    the spec states itself (which must agree on the arch)."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not HF_TYPE.fullmatch(model_type):
        raise Problem(422, "config.json has no valid model_type", field="config.model_type")
    if config.get("auto_map") or config.get("trust_remote_code"):
        raise Problem(422, "config.json names remote code (auto_map); editaudit builds only transformers' own "
                           "classes and never runs code from an upload", field="config.auto_map")
    arch = f"hf/{model_type}"
    if given.get("arch", arch) != arch:
        raise Problem(422, f"spec.arch {given['arch']!r} disagrees with config.json's model_type ({arch})",
                      field="spec.arch")
    out: dict[str, Any] = {"arch": arch}
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            ordered = sorted((int(k), str(v)) for k, v in id2label.items())
        except ValueError:
            raise Problem(422, "config.json id2label keys must be integers", field="config.id2label") from None
        if [i for i, _ in ordered] != list(range(len(ordered))):
            raise Problem(422, "config.json id2label must number the classes 0..N-1", field="config.id2label")
        out["num_classes"] = len(ordered)
        if len({v for _, v in ordered}) == len(ordered):
            out["class_names"] = [v for _, v in ordered]
    size, channels = config.get("image_size"), config.get("num_channels", 3)
    if isinstance(size, list) and len(size) == 2:
        size = size if all(isinstance(d, int) for d in size) else None
    elif isinstance(size, int):
        size = [size, size]
    else:
        size = None
    if size is not None and isinstance(channels, int):
        out["input_shape"] = [channels, *size]
    return {**out, **given}
