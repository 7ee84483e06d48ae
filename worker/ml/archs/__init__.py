"""Architecture registry (timm-style): `register_arch` + `create_model`. One family per file."""

from editaudit.worker.ml.archs import smallcnn, tv  # noqa: F401,E402  (registration side effects)
from editaudit.worker.ml.archs.registry import (  # noqa: F401
    ARCHS,
    ArchSpec,
    Normalized,
    build_inner,
    create_model,
    list_archs,
    load_state_dict_strict,
    register_arch,
)
