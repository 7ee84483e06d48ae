"""`/archs` and `/methods`: what a request may name, read from the registries (torch-free)."""

from __future__ import annotations

from fastapi import APIRouter

from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.core import arch_manifest
from editaudit.service.openapi import op
from editaudit.service.schemas.edits import MethodOut, MethodsOut
from editaudit.service.schemas.models import ArchsOut

router = APIRouter(tags=["catalog"])
TRAITS = ("layers", "single_layer", "ranked", "needs_x_orig", "layer_fields", "edit_ref_fields",
          "interpolation_base", "audit_sections", "sweep_info")


@router.get("/archs", response_model=ArchsOut, **op("list_archs", None, any_key=True))
def list_archs():
    """Registered architectures (checked at upload) and the families a worker checks (timm, Hugging Face)."""
    return ArchsOut(archs=arch_manifest.arch_names(), families=arch_manifest.WORKER_CHECKED)


@router.get("/methods", response_model=MethodsOut, **op("list_methods", None, any_key=True))
def list_methods():
    """Every registered edit method with its traits and the JSON schema of its `hyperparams`."""
    return MethodsOut(methods=[
        MethodOut(method=name, params_schema=cls.model_json_schema(),
                  traits={**{t: getattr(cls, t) for t in TRAITS},
                          "dataset_fields": {f: u.role for f, u in cls.dataset_fields.items()}})
        for name, cls in sorted(EDIT_PARAMS.items())])
