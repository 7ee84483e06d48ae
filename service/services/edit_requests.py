"""Validate an edit request completely (so a bad request is a 422 now, not a failed job later), then write its rows.

Everything method-specific comes from the method's params traits (editaudit.contracts.edits); nothing here branches
on a method's name. The hyperparameters are stored as validated, defaults included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.orm import Session

from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.cost import estimate
from editaudit.contracts.edits import EDIT_PARAMS, MAX_SWEEP_LAYERS, EditParams, holdout_size
from editaudit.contracts.formats.shards import preprocessed_size
from editaudit.contracts.statuses import Status
from editaudit.core import arch_manifest, db, layers, repo
from editaudit.service.errors import Problem, validation_problem
from editaudit.service.schemas.edits import EditRequest
from editaudit.service.services.profiles import resolve_audit


@dataclass
class ValidEdit:
    request: EditRequest
    params: EditParams
    audit: AuditConfig  # as requested, or the named profile's
    profile: dict | None  # {tenant, name, version} of the profile the server resolved


def validate_edit(s: Session, req: EditRequest, max_passes: int | None = None) -> ValidEdit:
    """Every id the request names must be one the session sees (the caller's tenant's, in an API request)."""
    model = repo.get_or_404(s, db.Model, req.model_id)
    repo.require_ready(model, "model_id")
    audit, profile = resolve_audit(s, req.audit_profile) if req.audit_profile else (req.audit, None)
    if req.method not in EDIT_PARAMS:
        raise Problem(422, f"unknown edit method {req.method!r}", field="method", valid=EDIT_PARAMS.names())
    try:
        params = EDIT_PARAMS[req.method].model_validate(req.hyperparams)
    except ValidationError as e:
        raise validation_problem(e, "hyperparams") from None
    _check_layers(req, model, params)
    for split, field in params.required_splits().items():
        if getattr(req, f"{split}_set") is None:
            raise Problem(422, f"{field.removeprefix('hyperparams.')} needs a {split}_set", field=field)
    for field, edit_id in params.edit_refs().items():
        _check_edit_ref(s, f"hyperparams.{field}", edit_id, model.id, req.layers)
    facts = _check_datasets(s, req, model, params)
    if params.needs_x_orig_anywhere and not facts["edit_set"]["has_x_orig"]:
        method = next(p.method for _, p in params.scopes() if p.needs_x_orig)
        raise Problem(422, f"method {method!r} needs an edit set with `x_orig`: the untransformed twin of "
                           "each edited image x (the layer learns to map x's keys to the values it produces on "
                           "x_orig); upload a dataset with x, x_orig, y and optionally mask", field="edit_set")
    if max_passes is not None:
        _check_cost(req, params, audit, facts, max_passes)
    return ValidEdit(req, params, audit, profile)


def _check_cost(req: EditRequest, params: EditParams, audit: AuditConfig, facts: dict, max_passes: int) -> None:
    sizes = {field.removesuffix("_set"): facts[field]["n"] for field in ("edit_set", "generalization_set", "test_set")
             if field in facts}
    cost = estimate(params, audit, sizes, layers=len(req.layers) if req.sweep else 1)
    if cost["total"] > max_passes:
        raise Problem(422, f"this request costs about {cost['total']:,} model passes over one image (audit "
                           f"{cost['audit']:,}, edit {cost['edit']:,}); the budget is {max_passes:,}: fewer "
                           "attacks, steps, restarts, radii, corruption cells or samples (audit.max_samples)",
                      field="audit", cost=cost, limit=max_passes)


def _check_layers(req: EditRequest, model: db.Model, params: EditParams) -> None:
    """`layers` resolved (names, blocks, globs: editaudit.core.layers) and checked against what the method takes;
    `req.layers` becomes the resolved list, which the edit row stores."""
    table = layers.module_table(model.arch, model.spec, model.info)
    valid_layers = [row["name"] for row in table]
    if params.layers == "required" and not req.layers:
        raise Problem(422, f"method {req.method!r} needs at least one layer in `layers`", field="layers",
                      valid=valid_layers)
    if params.layers == "none" and req.layers:
        raise Problem(422, f"method {req.method!r} edits the whole model and takes no `layers`; use one of "
                           f"{_methods_taking_layers()} to restrict an edit to layers", field="layers")
    if req.sweep:
        _check_sweep(req, params)  # as written (distinct entries), and again as resolved (a glob may match many)
    try:
        req.layers = layers.resolve(req.layers, table)
    except layers.LayerError as e:
        raise Problem(422, f"{e.reason} in {model.arch}", field=f"layers.{e.index}", closest=e.closest) from None
    if req.sweep:
        _check_sweep(req, params)
    elif params.single_layer and len(req.layers) != 1:
        raise Problem(422, f"method {req.method!r} edits exactly one layer; `layers` names {len(req.layers)}: "
                           f"{req.layers[:8]} (or set \"sweep\": true to edit each of them in turn)", field="layers")
    one_at_a_time = req.sweep or params.single_layer
    for prefix, p in params.scopes():
        for name in p.layer_fields:  # one module (a block's path, or its name in the checkpoint), stored resolved
            value = getattr(p, name)
            if value:
                try:
                    found = [] if layers.GLOB & set(value) else layers.resolve([value], table)
                except layers.LayerError:
                    found = []
                if len(found) != 1:
                    raise Problem(422, f"unknown {name} {value!r} for {model.arch} (one module's path)",
                                  field=f"{prefix}.{name}", closest=arch_manifest.closest(value, valid_layers))
                setattr(p, name, found[0])
        if p.ranked and one_at_a_time:
            for i, layer in enumerate(req.layers):
                _check_rank(table, i, layer, p, f"{prefix}.rank")
        if p.rewrites_layer_map:
            for i, layer in enumerate(req.layers):
                _check_rewritable(table, model, i, layer)


def _methods_taking_layers() -> list[str]:
    return sorted(name for name, cls in EDIT_PARAMS.items() if cls.layers == "required")


def _check_sweep(req: EditRequest, params: EditParams) -> None:
    if params.layers != "required":
        raise Problem(422, f"a sweep edits one layer at a time; method {req.method!r} does not take layers (use one "
                           f"of {_methods_taking_layers()})", field="sweep")
    if len(req.layers) < 2 or len(set(req.layers)) != len(req.layers) or len(req.layers) > MAX_SWEEP_LAYERS:
        raise Problem(422, f"a sweep needs 2 to {MAX_SWEEP_LAYERS} distinct layers; got {req.layers}", field="layers")
    for field in params.edit_refs():
        raise Problem(422, f"a sweep cannot reuse one earlier edit ({field}) for every layer; give an inline edit "
                           "instead", field=f"hyperparams.{field}")


def _check_rewritable(table: list[dict], model: db.Model, index: int, layer: str) -> None:
    row = layers.row_of(table, layer)
    kind = None if row is None else row.get("rewrite")
    if kind is None:
        what = "a block" if row is None else f"a {row['type']} layer"
        raise Problem(422, f"layer {layer!r} is {what}; a key -> value rewrite needs one Linear or Conv2d layer",
                      field=f"layers.{index}")
    if kind.startswith("unsupported"):
        raise Problem(422, f"layer {layer!r} of {model.arch} cannot be rewritten: {kind.split(': ', 1)[1]}",
                      field=f"layers.{index}")


def _check_rank(table: list[dict], index: int, layer: str, params: EditParams, field: str) -> None:
    """rank(ΔW) can be at most what the method allows on the layer's weight (`rank_limit`)."""
    rank: int = params.rank  # type: ignore[attr-defined]  # called for ranked methods: their params have one
    row = layers.row_of(table, layer)
    shape: Sequence[int] = [] if row is None else (row["weight_shape"] or [])
    if len(shape) < 2:
        what = "a block" if row is None else f"weight shape {list(shape)}"
        raise Problem(422, f"layer {layer!r} has no matrix or conv weight ({what}); low-rank edits need one linear "
                           "or conv layer", field=f"layers.{index}")
    limit = params.rank_limit(shape)
    if rank > limit:
        raise Problem(422, f"rank {rank} is larger than layer {layer!r} (weight {list(shape)}) allows: at most {limit}",
                      field=field)


def _check_edit_ref(s: Session, field: str, edit_id: str, model_id: str, layers: list[str]) -> None:
    """An edit a method reads the weights of: a succeeded single-layer edit of the same model and layer."""
    base = repo.get_or_404(s, db.Edit, edit_id, field=field)
    if base.status != Status.succeeded:
        raise Problem(422, f"base edit {edit_id} is {base.status}; interpolation needs a succeeded edit", field=field)
    if base.model_id != model_id:
        raise Problem(422, f"base edit {edit_id} edited model {base.model_id}, not {model_id}", field=field)
    moved = sorted({k.rsplit(".", 1)[0] for k in (base.info or {}).get("changed_keys", [])})
    if moved != layers:
        raise Problem(422, f"base edit {edit_id} changed layers {moved}; 1-LI needs a single-layer edit of "
                           f"{layers}", field=field)


def _check_datasets(s: Session, req: EditRequest, model: db.Model, params: EditParams) -> dict[str, dict]:
    """Every dataset the request names exists, is not empty, fits the model's input and (where labels matter) its
    classes. Returns the facts by field."""
    spec = model.spec
    named = {f: (getattr(req, f), True) for f in ("edit_set", "generalization_set", "test_set")}
    named.update({field: (ref, use.needs_labels) for field, ref, use in params.datasets().values()})
    facts_of = {}
    for field, (ref, needs_labels) in named.items():
        if ref is None:
            continue
        facts = facts_of[field] = repo.dataset_facts(s, ref, field)
        if facts["n"] == 0:  # uploads refuse N = 0 already; rows from elsewhere must not start a job either
            raise Problem(422, f"{field} is empty (N = 0): an edit needs at least one example", field=field)
        _check_shape(field, facts["shape"], spec)
        if needs_labels and facts.get("classes") and spec.get("class_names"):
            missing = [c for c in facts["classes"] if c not in spec["class_names"]]
            if missing:
                raise Problem(422, f"{field} has classes the model does not: {missing[:10]} (labels follow the "
                                   "model's class_names by name)", field=field, closest=arch_manifest.closest(
                                       missing[0], spec["class_names"]))
        elif needs_labels and facts["label_max"] >= spec["num_classes"]:
            raise Problem(422, f"{field} has label {facts['label_max']} but the model has {spec['num_classes']} "
                               "classes (labels must be < num_classes)", field=field)
    if params.held_out_roles() and not holdout_size(facts_of["test_set"]["n"]):
        raise Problem(422, f"{sorted(params.held_out_roles())} default to a held-out part of the test set, and its "
                           f"{facts_of['test_set']['n']} images are too few; name a locality_set or set "
                           "locality_weight to 0", field="test_set")
    return facts_of


def _check_shape(field: str, shape: list[int], spec: dict) -> None:
    """A dataset fits the model's input as it is, or through the model's preprocessing (resize the shorter side,
    centre-crop to the input size; the worker applies it per batch, in [0, 1] pixel space)."""
    want = list(spec["input_shape"])
    if list(shape) == want:
        return
    if shape[0] != want[0]:
        raise Problem(422, f"{field} images have {shape[0]} channels but the model takes {want[0]}", field=field)
    pre = spec.get("preprocess") or {}
    resize = pre.get("resize")
    scaled = list(preprocessed_size(shape[1], shape[2], pre) or shape[1:])  # as the worker computes it
    if resize is None and any(d < w for d, w in zip(scaled, want[1:], strict=True)):
        raise Problem(422, f"{field} images are {shape} but the model takes {want}; give the model a "
                           "spec.preprocess.resize, or import the archive with resize/crop", field=field)
    if any(d < w for d, w in zip(scaled, want[1:], strict=True)):
        raise Problem(422, f"{field} images {shape} resized to a shorter side of {resize} are {scaled}, smaller than "
                           f"the model's input {want[1:]}", field=field)


def add_edit_rows(s: Session, v: ValidEdit) -> tuple[db.Edit, db.Audit, list[tuple[str, db.Edit, db.Audit]]]:
    """The edit and its audit (and for a sweep one sub-edit per layer with its own audit), not yet committed."""
    edit, audit = _add_edit(s, v, v.request.layers, sweep=v.request.sweep)
    subs = [(layer, *_add_edit(s, v, [layer], sweep_id=edit.id)) for layer in v.request.layers] \
        if v.request.sweep else []
    return edit, audit, subs


def _add_edit(s: Session, v: ValidEdit, layers: list[str], sweep: bool = False, sweep_id: str | None = None):
    req = v.request
    edit = db.Edit(model_id=req.model_id, method=req.method, layers=layers,
                   hyperparams=v.params.model_dump(mode="json"), edit_set=req.edit_set,
                   generalization_set=req.generalization_set, test_set=req.test_set, status=Status.queued,
                   progress={"stage": "queued", "done": 0, "total": 1}, sweep=sweep, sweep_id=sweep_id)
    s.add(edit)
    s.flush()
    audit = db.Audit(edit_id=edit.id, status=Status.queued, config=v.audit.model_dump(mode="json"), profile=v.profile)
    s.add(audit)
    return edit, audit
