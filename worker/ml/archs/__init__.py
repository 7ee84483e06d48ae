"""Architecture registry (timm-style): `register_arch` + `create_model`. One family per file: registered names
(torchvision, built-ins) and families resolved by prefix (`timm/<name>`, `hf/<model_type>`; timm and transformers
are imported only when such a model is used).

Nothing is ever fetched from a hub: the Hugging Face libraries are switched offline before either is imported (a
config or a model name that would make them download fails instead)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from editaudit.worker.ml.archs import hf_family, smallcnn, timm_family, tv  # noqa: F401,E402  (registration)
from editaudit.worker.ml.archs.registry import (  # noqa: F401
    ARCHS,
    FAMILIES,
    ArchSpec,
    Family,
    Normalized,
    build_inner,
    checkpoint_state,
    complete_spec,
    create_model,
    family_of,
    is_known,
    list_archs,
    load_state,
    load_state_dict_strict,
    register_arch,
    register_family,
)
