"""`/models` and `/archs` bodies: the model spec users send with a checkpoint, and what they get back."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator

from editaudit.contracts.formats.shards import Interpolation
from editaudit.contracts.statuses import IngestStatus

MAX_CHANNELS = 16
MAX_INPUT_PIXELS = 4096 * 4096


class Preprocess(BaseModel):
    """How the worker brings an image of another size to the model's input, in [0, 1] pixel space (attacks and
    corruptions then act on that image; `mean`/`std` are applied after, inside the model): resize the shorter side
    to `resize`, then centre-crop to the input size, as torchvision's Resize + CenterCrop and timm's eval transform."""

    model_config = ConfigDict(extra="forbid")

    resize: int | None = Field(None, ge=1, le=8192, description="shorter side after resizing (None: no resize)")
    interpolation: Interpolation = "bilinear"


class ModelSpec(BaseModel):
    """A registered architecture's spec (num_classes and input_shape required), or a timm / Hugging Face one: those
    take what the spec leaves out from the model's pretrained config (timm) or config.json (Hugging Face), resolved
    by the worker's ingest job."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field(description="a registered architecture (torchvision/resnet18, editaudit/smallcnn), "
                                  "timm/<name>, or hf/<model_type> (set from an uploaded config.json)")
    num_classes: int | None = Field(None, ge=2, le=100_000)
    input_shape: list[int] | None = Field(None, min_length=3, max_length=3, description="[C, H, W]")
    mean: list[FiniteFloat] | None = None
    std: list[FiniteFloat] | None = None
    class_names: list[str] | None = Field(None, description="one name per class, index = label (Hugging Face: "
                                                              "from id2label); datasets' class folders match these")
    preprocess: Preprocess | None = None
    config: dict | None = Field(None, description="Hugging Face: the config.json (sent as its own part)")
    preprocessor: dict | None = Field(None, description="Hugging Face: preprocessor_config.json, when present")

    @model_validator(mode="after")
    def _check(self):
        shape = self.input_shape
        if shape is not None and any(d < 1 for d in shape):
            raise ValueError("input_shape dimensions must be >= 1")
        if shape is not None and (shape[0] > MAX_CHANNELS or shape[1] * shape[2] > MAX_INPUT_PIXELS):
            raise ValueError(f"input_shape must have at most {MAX_CHANNELS} channels and {MAX_INPUT_PIXELS} pixels "
                             "(4096 x 4096): a worker runs the model on one such input to check it")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and shape is not None and len(v) != shape[0]:
                raise ValueError(f"{name} needs one value per input channel ({shape[0]}), got {len(v)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        if self.class_names is not None:
            if self.num_classes is not None and len(self.class_names) != self.num_classes:
                raise ValueError(f"class_names has {len(self.class_names)} names for {self.num_classes} classes")
            if len(set(self.class_names)) != len(self.class_names):
                raise ValueError("class_names must be distinct")
        return self


class ModelOut(BaseModel):
    id: str
    sha256: str
    arch: str
    spec: dict = Field(description="as resolved: once `ready`, what every edit and audit of this model uses")
    status: IngestStatus = Field(description="`validating` until a worker has checked a timm / Hugging Face "
                                             "checkpoint, then `ready` or `invalid` (see `error`); edits need `ready`")
    error: str | None = None
    size_bytes: int
    parent_model_id: str | None = None
    edit_id: str | None = None
    created_at: datetime


class ArchsOut(BaseModel):
    archs: list[str] = Field(description="registered architectures, checked at upload")
    families: dict[str, str] = Field(default_factory=dict, description="prefixes a worker checks (timm/<name>, "
                                                                       "hf/<model_type>), with what they take")


class LayerOut(BaseModel):
    name: str = Field(description="the module's path: what `layers` names (globs and a block's path name several)")
    type: str
    weight_shape: list[int] | None = Field(description="None for a module that owns parameters but no `weight`")
    parameters: int
    checkpoint_name: str | None = Field(None, description="the module's path in the checkpoint, where the library "
                                                          "renamed it (transformers 5); `layers` accepts either")
    rewrite: str | None = Field(None, description="Linear / Conv2d: what rewrite matches (layer, block: ..., "
                                                   "unsupported: why)")


class LayersOut(BaseModel):
    model_id: str
    arch: str
    layers: list[LayerOut]


class LineageNode(BaseModel):
    id: str
    edit_id: str | None
    parent_model_id: str | None = None
    sha256: str | None = None
    created_at: datetime


class LineageOut(BaseModel):
    model_id: str
    ancestors: list[LineageNode] = Field(description="root first, each with the edit that made the next one")
    children: list[LineageNode] = Field(description="models edited from this one")
