"""`/edits`: validate an edit request fully, commit its rows, then enqueue it by task name (no torch here)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from pydantic import ValidationError

from editaudit.service import archs, db
from editaudit.service.deps import SessionDep, SvcDep
from editaudit.service.errors import Problem, not_found, validation_problem
from editaudit.service.routes.datasets import dataset_facts
from editaudit.service.routes.models import get_model_row, object_response, safetensors_response
from editaudit.service.schemas import EditAccepted, EditOut, EditRequest, SubEdit
from editaudit.specs import (EDIT_METHODS, MAX_SWEEP_LAYERS, METHODS_NEEDING_LAYERS, METHODS_NEEDING_X_ORIG,
                             METHODS_OPTIONAL_LAYERS, RANKED_METHODS, SINGLE_LAYER_METHODS, max_rank,
                             named_datasets)
from editaudit.worker.celery_app import RUN_EDIT  # the task's name; importing Celery's app does not import torch

router = APIRouter(tags=["edits"])
log = logging.getLogger(__name__)


def _validate(req: EditRequest, model: db.Model, s) -> None:
    if req.method not in EDIT_METHODS:
        raise Problem(422, f"unknown edit method {req.method!r}", field="method", valid=sorted(EDIT_METHODS))
    try:
        params = EDIT_METHODS[req.method].model_validate(req.hyperparams)
    except ValidationError as e:
        raise validation_problem(e, "hyperparams") from None
    base = getattr(params, "base", None) if req.method == "interpolate" else None  # 1-LI's inline base edit
    base_params = EDIT_METHODS[base.method].model_validate(base.hyperparams) if base else None
    if req.method in METHODS_NEEDING_LAYERS and not req.layers:
        raise Problem(422, f"method {req.method!r} needs at least one layer in `layers`", field="layers",
                      valid=archs.layer_names(model.arch))
    if req.method not in METHODS_NEEDING_LAYERS | METHODS_OPTIONAL_LAYERS and req.layers:
        raise Problem(422, f"method {req.method!r} edits the whole model and takes no `layers`; "
                           f"use one of {sorted(METHODS_NEEDING_LAYERS)} to restrict an edit to layers", field="layers")
    if req.sweep:
        _check_sweep(req)
    elif req.method in SINGLE_LAYER_METHODS and len(req.layers) != 1:
        raise Problem(422, f"method {req.method!r} edits exactly one layer; got {len(req.layers)} (or set "
                           "\"sweep\": true to edit each of them in turn)", field="layers")
    if req.method == "interpolate" and params.alpha.target_split == "generalization" and not req.generalization_set:
        raise Problem(422, "alpha.target_split = generalization needs a generalization_set",
                      field="hyperparams.alpha.target_split")
    base_edit_id = getattr(params, "base_edit_id", None)
    if base_edit_id:
        _check_base_edit(s, base_edit_id, model.id, req.layers)
    valid_layers = archs.layer_names(model.arch)
    for i, layer in enumerate(req.layers):
        if layer not in valid_layers:
            raise Problem(422, f"unknown layer {layer!r} for {model.arch}", field=f"layers.{i}",
                          closest=archs.closest(layer, valid_layers))
    for i, layer in enumerate(req.layers if req.sweep or req.method in SINGLE_LAYER_METHODS else []):
        if req.method in RANKED_METHODS:
            _check_rank(model, i, layer, params.rank, "hyperparams.rank")
        if base and base.method in RANKED_METHODS:
            _check_rank(model, i, layer, base_params.rank, "hyperparams.base.hyperparams.rank")
    from_layer = getattr(params, "from_layer", None)
    if from_layer and from_layer not in valid_layers:
        raise Problem(422, f"unknown from_layer {from_layer!r} for {model.arch}", field="hyperparams.from_layer",
                      closest=archs.closest(from_layer, valid_layers))
    spec = model.spec
    refs = {f: getattr(req, f) for f in ("edit_set", "generalization_set", "test_set")}
    refs.update(dict(named_datasets(req.method, req.hyperparams).values()))
    facts_of = {}
    for field, ref in refs.items():
        if ref is None:
            continue
        facts = facts_of[field] = dataset_facts(s, ref, field)
        if facts["n"] == 0:  # uploads refuse N = 0 already; rows from elsewhere must not start a job either
            raise Problem(422, f"{field} is empty (N = 0): an edit needs at least one example", field=field)
        if list(facts["shape"]) != list(spec["input_shape"]):
            raise Problem(422, f"{field} images are {facts['shape']} but the model takes {spec['input_shape']}",
                          field=field)
        if facts["label_max"] >= spec["num_classes"] and not field.endswith("reference_set"):  # C needs no labels
            raise Problem(422, f"{field} has label {facts['label_max']} but the model has {spec['num_classes']} "
                               "classes (labels must be < num_classes)", field=field)
    method = base.method if base else req.method
    if method in METHODS_NEEDING_X_ORIG and not facts_of["edit_set"]["has_x_orig"]:
        raise Problem(422, f"method {method!r} needs an edit set with `x_orig`: the untransformed twin of "
                           "each edited image x (the layer learns to map x's keys to the values it produces on "
                           "x_orig); upload a dataset with x, x_orig, y and optionally mask", field="edit_set")


def _check_sweep(req: EditRequest) -> None:
    if req.method not in METHODS_NEEDING_LAYERS:
        raise Problem(422, f"a sweep edits one layer at a time; method {req.method!r} does not take layers (use one "
                           f"of {sorted(METHODS_NEEDING_LAYERS)})", field="sweep")
    if len(req.layers) < 2 or len(set(req.layers)) != len(req.layers) or len(req.layers) > MAX_SWEEP_LAYERS:
        raise Problem(422, f"a sweep needs 2 to {MAX_SWEEP_LAYERS} distinct layers; got {req.layers}", field="layers")
    if req.hyperparams.get("base_edit_id"):
        raise Problem(422, "a sweep cannot reuse one earlier edit for every layer; give an inline `base` instead",
                      field="hyperparams.base_edit_id")


def _check_rank(model: db.Model, index: int, layer: str, rank: int, field: str) -> None:
    """rank(ΔW) can be at most min(out, in * kernel) of the layer's weight."""
    shape = archs.expected_shapes(model.arch, model.spec["num_classes"], model.spec["input_shape"][0]).get(
        f"{layer}.weight", [])
    if len(shape) < 2:
        raise Problem(422, f"layer {layer!r} has no matrix or conv weight (weight shape {list(shape)}); low-rank "
                           "edits need a linear or conv layer", field=f"layers.{index}")
    limit = max_rank(shape)
    if rank > limit:
        raise Problem(422, f"rank {rank} is larger than layer {layer!r} (weight {list(shape)}) allows: at most {limit}",
                      field=field)


def _check_base_edit(s, base_edit_id: str, model_id: str, layers: list[str]) -> None:
    field = "hyperparams.base_edit_id"
    base = s.get(db.Edit, base_edit_id)
    if base is None:
        raise Problem(404, f"no edit with id {base_edit_id!r}", field=field)
    if base.status != "succeeded":
        raise Problem(422, f"base edit {base_edit_id} is {base.status}; interpolation needs a succeeded edit", field=field)
    if base.model_id != model_id:
        raise Problem(422, f"base edit {base_edit_id} edited model {base.model_id}, not {model_id}", field=field)
    moved = sorted({k.rsplit(".", 1)[0] for k in (base.info or {}).get("changed_keys", [])})
    if moved != layers:
        raise Problem(422, f"base edit {base_edit_id} changed layers {moved}; 1-LI needs a single-layer edit of "
                           f"{layers}", field=field)


@router.post("/edits", status_code=202, response_model=EditAccepted)
def create_edit(req: EditRequest, s: SessionDep, svc: SvcDep, response: Response):
    model = s.get(db.Model, req.model_id)
    if model is None:
        raise not_found("model", req.model_id)
    _validate(req, model, s)
    edit, audit = _add_edit(s, req, req.layers, sweep=req.sweep)
    subs = [(layer, *_add_edit(s, req, [layer], sweep_id=edit.id)) for layer in req.layers] if req.sweep else []
    s.commit()  # the rows exist before any worker can see the message
    try:
        svc.enqueue(RUN_EDIT, edit.id)
    except Exception as exc:  # noqa: BLE001 - broker down: fail the job visibly rather than leave it queued
        log.exception("could not enqueue edit %s", edit.id)
        for e in [edit] + [e for _, e, _ in subs]:
            db.finish_edit(s, e, "failed", f"could not enqueue: {exc}")
        s.commit()
        raise Problem(503, f"the job queue is unreachable; edit {edit.id} was marked failed", field="broker") from None
    response.headers["Location"] = f"/edits/{edit.id}"
    return EditAccepted(id=edit.id, status=edit.status, audit_id=audit.id,
                        sub_edits=[SubEdit(layer=layer, id=e.id, audit_id=a.id) for layer, e, a in subs] or None)


def _add_edit(s, req: EditRequest, layers: list[str], sweep: bool = False, sweep_id: str | None = None):
    edit = db.Edit(model_id=req.model_id, method=req.method, layers=layers, hyperparams=req.hyperparams,
                   edit_set=req.edit_set, generalization_set=req.generalization_set, test_set=req.test_set,
                   status="queued", progress={"stage": "queued", "done": 0, "total": 1}, sweep=sweep,
                   sweep_id=sweep_id)
    s.add(edit)
    s.flush()
    audit = db.Audit(edit_id=edit.id, status="queued", config=req.audit.model_dump(mode="json"))
    s.add(audit)
    return edit, audit


def get_edit_row(s, edit_id: str) -> db.Edit:
    edit = s.get(db.Edit, edit_id)
    if edit is None:
        raise not_found("edit", edit_id)
    return edit


def audit_id_of(s, edit_id: str) -> str:
    return s.query(db.Audit.id).filter_by(edit_id=edit_id).scalar()


@router.get("/edits/{edit_id}", response_model=EditOut)
def get_edit(edit_id: str, s: SessionDep):
    edit = get_edit_row(s, edit_id)
    subs = [SubEdit(layer=e.layers[0], id=e.id, audit_id=audit_id_of(s, e.id)) for e in db.sub_edits(s, edit)]
    return EditOut.model_validate({**{c.name: getattr(edit, c.name) for c in db.Edit.__table__.columns},
                                   "audit_id": audit_id_of(s, edit_id), "sub_edits": subs or None})


def require_single(s, edit: db.Edit) -> None:
    """A sweep has one edited model per layer: weights, deltas, gates and promotions belong to its sub-edits."""
    if edit.sweep:
        raise Problem(409, f"edit {edit.id} is a layer sweep: use one of its sub-edits "
                           f"{[e.id for e in db.sub_edits(s, edit)]}", field="edit_id",
                      sub_edits=[{"layer": e.layers[0], "id": e.id} for e in db.sub_edits(s, edit)])


def require_succeeded(s, edit: db.Edit, what: str) -> None:
    """`what` (weights, delta, revert) needs a single edit that has succeeded: else 409."""
    require_single(s, edit)
    if edit.status != "succeeded":
        raise Problem(409, f"edit {edit.id} is {edit.status}: {what} needs an edit that has succeeded",
                      field="edit_id")


@router.get("/edits/{edit_id}/weights")
def get_edit_weights(edit_id: str, s: SessionDep, svc: SvcDep):
    edit = get_edit_row(s, edit_id)
    require_succeeded(s, edit, "weights")
    return safetensors_response(svc, get_model_row(s, edit.edited_model_id))


@router.get("/edits/{edit_id}/delta")
def get_edit_delta(edit_id: str, s: SessionDep, svc: SvcDep):
    """The changed tensors (new values) as safetensors: the parent's weights updated with these are the edit's."""
    edit = get_edit_row(s, edit_id)
    require_succeeded(s, edit, "delta")
    if edit.delta_object_key is None:
        raise Problem(404, f"edit {edit_id} finished before deltas were recorded; diff its weights with its parent's",
                      field="edit_id")
    return object_response(svc, edit.delta_object_key, f"{edit_id}.delta.safetensors", edit.delta_sha256)


@router.post("/edits/{edit_id}/cancel", response_model=EditOut)
def cancel_edit(edit_id: str, s: SessionDep):
    """Cooperative: a queued edit never starts; a running one stops at its next batch and stores nothing."""
    edit = get_edit_row(s, edit_id)
    if edit.status not in ("queued", "running"):
        raise Problem(409, f"edit {edit_id} is already {edit.status}", field="edit_id")
    for e in [edit] + [e for e in db.sub_edits(s, edit) if e.status in ("queued", "running")]:
        db.finish_edit(s, e, "canceled", "canceled by request")
    s.commit()
    return get_edit(edit_id, s)
