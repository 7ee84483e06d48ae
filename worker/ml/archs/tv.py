"""Every torchvision classification model as `torchvision/<name>`, built with default kwargs and `num_classes`.

No pretrained weights are fetched (no network): users upload their own state_dict.
"""

from __future__ import annotations

import torchvision

from editaudit.worker.ml.archs.registry import register_arch


def _make(name: str):
    def build(num_classes, input_shape):
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)

    return build


for _name in torchvision.models.list_models(module=torchvision.models):
    register_arch(f"torchvision/{_name}", channels=3)(_make(_name))
