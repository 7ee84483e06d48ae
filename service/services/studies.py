"""Studies: expand the grid, validate every run as an edit (a bad run is a 422 naming it before anything is stored),
write the study and its runs' rows in one transaction, and read a study back as the rows its summary is computed
from. Runs are ordinary edits: the workers run them in parallel, the reconciler resends a run whose worker died
(finished runs are never redone) and a cancel cancels them like any edit."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from editaudit.contracts.statuses import ACTIVE, Status
from editaudit.contracts.studies import Cell, expand
from editaudit.core import db, layers, repo
from editaudit.gate.evaluate import GateUsageError, evaluate
from editaudit.gate.policy import Policy
from editaudit.service.errors import Problem, validation_problem
from editaudit.service.schemas.edits import EditRequest
from editaudit.service.schemas.studies import StudyRequest, StudyRun
from editaudit.service.services.audits import audit_result
from editaudit.service.services.edit_requests import ValidEdit, add_edit_rows, validate_edit
from editaudit.service.services.gating import edit_datasets, resolve_policy


@dataclass
class ValidStudy:
    request: StudyRequest
    runs: list[tuple[Cell, ValidEdit]]  # in grid order
    policy: dict[str, Any]  # pinned_policy


def validate_study(s: Session, req: StudyRequest, max_passes: int | None) -> ValidStudy:
    """Every run of the grid as a validated edit, in grid order; the first bad one is a 422 whose fields are
    prefixed `grid.runs.<i>` and whose detail names the run. Two runs that are one edit once validated are a 422."""
    policy = pinned_policy(s, req.policy)
    out: list[tuple[Cell, ValidEdit]] = []
    seen: dict[str, int] = {}
    for i, cell in enumerate(expand(req.grid)):
        try:
            valid = validate_edit(s, _edit_request(req, cell), max_passes)
        except Problem as p:
            raise _in_run(p, i, cell) from None
        same = json.dumps([cell.method, valid.request.layers, valid.params.model_dump(mode="json")], sort_keys=True)
        if same in seen:  # `1` and `"1"`, or two globs naming one layer: one run twice would count as two seeds
            raise _in_run(Problem(422, f"it is the same edit as run {seen[same]} (the grid's values coincide once "
                                       "validated)", field="hyperparams"), i, cell)
        seen[same] = i
        out.append((cell, valid))
    return ValidStudy(req, out, policy)


def pinned_policy(s: Session, ref: str | dict) -> dict[str, Any]:
    """The policy a study is judged by, as it is now: {ref, document}. Stored with the study, so a later version of
    a named policy does not change the verdicts (or the recommendation) of a study that already ran."""
    policy, resolved = resolve_policy(s, ref)  # an unknown policy is a 404 now, not a blank column later
    return {"ref": resolved, "document": policy.model_dump(mode="json")}


def _edit_request(req: StudyRequest, cell: Cell) -> EditRequest:
    """The run as an edit request. Its seed seeds the edit and the audit; a named audit profile runs exactly as
    stored (its seed included), so a policy that requires the profile accepts every run."""
    audit = req.audit if "profile" in req.audit else {**req.audit, "seed": cell.seed}
    try:
        return EditRequest.model_validate({
            "model_id": req.model_id, "method": cell.method, "layers": list(cell.layers),
            "hyperparams": cell.hyperparams, "edit_set": req.edit_set, "generalization_set": req.generalization_set,
            "test_set": req.test_set, "audit": audit})
    except ValidationError as e:
        raise validation_problem(e, "") from None


def _in_run(p: Problem, i: int, cell: Cell) -> Problem:
    """The run's Problem with its fields under `grid.runs.<i>` and the run named in the detail."""
    prefix = f"grid.runs.{i}"
    errors = [{**e, "field": f"{prefix}.{e['field'].lstrip('.')}" if e.get("field") else prefix} for e in p.errors]
    return Problem(p.status, f"run {i} ({cell.group}, seed {cell.seed}): {p.detail}", errors=errors or
                   [{"field": prefix, "reason": p.detail}], **p.extra)


def layer_depths(model: db.Model, names: set[str]) -> dict[str, float]:
    """Each edited layer's position in the model's module order, 0 (input side) to 1 (output side)."""
    table = [row["name"] for row in layers.module_table(model.arch, model.spec, model.info)]
    last = max(len(table) - 1, 1)
    out = {}
    for name in names:
        at = next((i for i, n in enumerate(table) if n == name or n.startswith(name + ".")), None)
        if at is not None:
            out[name] = round(at / last, 4)
    return out


def add_study_rows(s: Session, v: ValidStudy) -> tuple[db.Study, list[db.Edit]]:
    """The study and one edit (with its audit) per run, not yet committed."""
    req, runs = v.request, v.runs
    model = repo.get_or_404(s, db.Model, req.model_id)
    cells: list[dict[str, Any]] = [
        {"index": i, "group": c.group, "method": c.method, "layers": v.request.layers, "seed": c.seed,
         "varied": c.varied, "base": c.base} for i, (c, v) in enumerate(runs)]
    depths = layer_depths(model, {layer for c in cells for layer in c["layers"]})
    request = {**req.model_dump(mode="json"), "pinned_policy": v.policy}
    study = db.Study(name=req.name, model_id=req.model_id, request=request, cells=cells, depths=depths)
    s.add(study)
    s.flush()
    edits = []
    for i, (_, valid) in enumerate(runs):
        edit, _, _ = add_edit_rows(s, valid)
        edit.study_id, edit.study_index = study.id, i
        edits.append(edit)
    s.flush()
    return study, edits


def study_edits(s: Session, study: db.Study) -> list[db.Edit]:
    return list(s.scalars(select(db.Edit).filter_by(study_id=study.id).order_by(db.Edit.study_index)))


def audits_of(s: Session, edits: list[db.Edit]) -> dict[str, db.Audit]:
    """edit id -> its audit, in one query (a study's page reads every run's)."""
    return {a.edit_id: a for a in s.scalars(select(db.Audit).where(db.Audit.edit_id.in_([e.id for e in edits])))}


def status_of(study: db.Study, edits: list[db.Edit]) -> tuple[Status, dict[str, int]]:
    counts = Counter(str(e.status) for e in edits)
    if any(e.status in ACTIVE for e in edits):
        status = Status.running
    elif study.canceled_at is not None:
        status = Status.canceled
    else:
        status = Status.succeeded if counts.get(Status.succeeded) else Status.failed
    return status, dict(counts)


def run_out(study: db.Study, edit: db.Edit, audit: db.Audit) -> StudyRun:
    cell = study.cells[edit.study_index or 0]
    return StudyRun(index=cell["index"], group=cell["group"], seed=cell["seed"], method=edit.method,
                    layers=edit.layers, edit_id=edit.id, audit_id=audit.id,
                    status=Status(edit.status), error=edit.error, worker=edit.worker)


def summary_rows(s: Session, study: db.Study, edits: list[db.Edit],
                 audits: dict[str, db.Audit]) -> list[dict[str, Any]]:
    """Each run in the shape editaudit.study.summary reads: its cell, status, metrics, deltas with the audit's
    intervals (clustered by image), durations, 1-LI's alpha path and the study policy's verdict."""
    pinned = study.request["pinned_policy"]
    policy, ref = Policy.model_validate(pinned["document"]), pinned["ref"]
    rows = []
    for edit in edits:
        cell = study.cells[edit.study_index or 0]
        audit = audits[edit.id]
        row: dict[str, Any] = {**cell, "edit_id": edit.id, "audit_id": audit.id, "status": str(edit.status),
                               "error": edit.error, "baseline": {}, "candidate": {}, "deltas": {},
                               "durations_s": {}, "alpha": None, "alpha_curve": None, "gate": None,
                               "depth": _depth(study.depths, edit.layers)}
        if edit.status == Status.succeeded and audit.status == Status.succeeded and audit.result is not None:
            result = audit_result(audit)
            row.update(baseline=dict(result.metrics.baseline), candidate=dict(result.metrics.candidate),
                       deltas={k: d.model_dump(mode="json") for k, d in result.deltas.items()},
                       durations_s=dict(result.durations_s), alpha=result.mli.alpha if result.mli else None,
                       threshold=result.mli.threshold if result.mli else None,
                       alpha_curve=[p.model_dump(mode="json") for p in result.alpha_curve or []] or None)
            try:
                gate = evaluate(result, policy, tenant=edit.tenant, typos_are_usage="inline" in ref,
                                datasets=edit_datasets(s, edit))
                row["gate"] = {"verdict": gate.verdict, "failed": [r.metric for r in gate.rules
                                                                   if r.outcome == "fail"]}
            except GateUsageError as e:
                row["gate"] = {"verdict": "fail", "failed": [e.field], "error": e.detail}
        rows.append(row)
    return rows


def _depth(depths: dict[str, float], edited: list[str]) -> float | None:
    known = [depths[name] for name in edited if name in depths]
    return round(sum(known) / len(known), 4) if known else None


def cancel(s: Session, study: db.Study) -> int:
    """Cancel every run still queued or running (a running one stops at its next batch); the count canceled."""
    active = [e for e in study_edits(s, study) if e.status in ACTIVE]
    if not active:
        raise Problem(409, f"study {study.id} has no run queued or running: nothing to cancel", field="study_id")
    study.canceled_at = db.utcnow()
    for edit in active:
        repo.finish_edit(s, edit, Status.canceled, f"study {study.id} canceled")
    return len(active)
