"""Audit reports: versioned JSON, Markdown for a CI comment, and one offline HTML page (plots and thumbnails
inlined) that leads with the answer. `audit_report` is what routes call; `audit_context` is what a page embedding
the report renders `report/audit.html.j2` with (the console fills its `nav` block). (JUnit XML is the gate's:
editaudit.gate.render.)

A report reads the audit, its edit and model lineage, the gate under the named policy and the audit's per-sample
files, and draws its plots (~1 s). A finished audit's view and its HTML are kept in a small LRU (bounded in entries
and bytes) keyed by everything they depend on (the audit and its finish time, the policy's version and the verdict,
never the request), so a policy's new version or a re-run is never served stale and no query string or Host header
can grow it; an unfinished audit is rendered each time (its numbers still move)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.contracts.scopes import Scope, grants
from editaudit.core import db, repo
from editaudit.service.deps import Services
from editaudit.service.errors import Problem
from editaudit.service.schemas.audits import AuditOut
from editaudit.service.services import samples
from editaudit.service.services.audits import audit_out
from editaudit.service.services.reports import gallery as gallery_mod
from editaudit.service.services.reports import markdown, plots, view
from editaudit.service.templating import render

__all__ = ["RENDERERS", "audit_context", "audit_report"]

REPORT_SCHEMA = "editaudit/audit-report"
REPORT_VERSION = 1
CACHED = 64


def as_json(v: view.ReportView) -> str:
    gate = None if v.gate is None else {"verdict": v.gate.verdict, "policy": v.gate.policy, "why": v.gate.why}
    return json.dumps({"schema": REPORT_SCHEMA, "schema_version": REPORT_VERSION,
                       "audit": v.audit.model_dump(mode="json", by_alias=True), "gate": gate}, indent=2)


def as_html(v: view.ReportView) -> str:
    return render("report/audit.html.j2", report=v)


RENDERERS: dict[str, Callable[[view.ReportView], str]] = {"json": as_json, "md": markdown.render, "html": as_html}
CACHED_FORMATS = frozenset({"html"})  # the others render in microseconds from the kept view

_cache: OrderedDict[tuple, Any] = OrderedDict()
_lock = threading.Lock()
CACHED_BYTES = 256 * 1024**2  # of kept pages and views (their plots and thumbnails), per API process


def _weight(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, view.ReportView):
        thumbs = [t for c in (value.gallery.conditions if value.gallery else []) for t in
                  (*c.broken_thumbs, *c.fixed_thumbs)]
        return sum(len(src) for _, src in value.figures) + sum(len(t.src or "") for t in thumbs) + 65536
    return 1024


def _cached(key: tuple | None, make: Callable[[], Any]) -> Any:
    """make(), kept under `key` (None: not kept), within CACHED entries and CACHED_BYTES."""
    if key is None:
        return make()
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = make()
    with _lock:
        _cache[key] = value
        while len(_cache) > 1 and (len(_cache) > CACHED or sum(map(_weight, _cache.values())) > CACHED_BYTES):
            _cache.popitem(last=False)
    return value


def edit_facts(s: Session, edit: db.Edit) -> view.EditFacts:
    params = EDIT_PARAMS[edit.method] if edit.method in EDIT_PARAMS else None
    fields = params.model_fields if params is not None else {}
    hyper = [(k, v, k in fields and fields[k].get_default(call_default_factory=True) == v)
             for k, v in sorted((edit.hyperparams or {}).items())]
    chain = repo.ancestors(s, edit.model_id)
    root = chain[0] if chain else None
    lineage = [m.id for m in chain] + ([edit.edited_model_id] if edit.edited_model_id else [])
    datasets = {split: ref for split in ("edit", "generalization", "test")
                if (ref := getattr(edit, f"{split}_set", None))}
    return view.EditFacts(edit.id, edit.method, list(edit.layers or []), hyper, datasets, edit.status, edit.model_id,
                          edit.edited_model_id, lineage, root.arch if root else None, edit.study_id)


def gate_of(s: Session, edit: db.Edit, policy: str, scopes: frozenset[str]) -> view.Gate:
    """The gate under `policy`, for a caller who may read gates (`gate:read`, as GET /edits/{id}/gate); an audit
    not gateable (running, a layer sweep) says why instead. An unknown policy is the caller's mistake: its 404
    stands, whatever the audit. What the reports and the console's edit page show of a gate."""
    from editaudit.service.services.gating import gate_for, resolve_policy

    if not grants(scopes, Scope.gate_read):
        return view.Gate(None, policy, [], [], why="this key lacks the gate:read scope: no verdict shown")
    if edit.sweep:
        resolve_policy(s, policy)  # gate_for, which checks it otherwise, refuses a sweep first
        return view.Gate(None, policy, [], [], why="a layer sweep is gated per layer: see each sub-edit's report")
    try:
        result = gate_for(s, edit.id, policy)
    except Problem as e:
        if e.status == 409:
            return view.Gate(None, policy, [], [], why=f"Not gated yet: {e.detail}")
        raise
    ref = result["policy"]
    name = ref.get("name") or "inline"
    version = ref.get("version")
    label = f"{name} (built-in)" if version == "builtin" else f"{name} v{version}" if version else name
    return view.Gate(result["verdict"], label, result["rules"], result["notes"])


def class_names(s: Session, edit: db.Edit | None) -> list[str] | None:
    model = s.get(db.Model, edit.model_id) if edit else None
    return (model.spec or {}).get("class_names") if model else None


def gallery_of(svc: Services, audit: db.Audit, names: list[str] | None) -> gallery_mod.Gallery | None:
    if audit.samples_key is None:
        return None
    images = samples.images(svc.store, audit) if audit.images_key else None
    return gallery_mod.build(samples.outcomes(svc.store, audit), images, names)


def cache_key(audit: db.Audit, gate: view.Gate | None) -> tuple | None:
    """Everything a finished audit's view depends on: the audit and when it finished, the policy's version and its
    verdict. None for an unfinished audit: never kept. (Not the request: no query string or Host header can make
    a new entry; links are added when the Markdown is rendered.)"""
    if audit.finished_at is None:
        return None
    return (audit.id, str(audit.finished_at), audit.status, gate.policy if gate else None,
            gate.verdict if gate else None, gate.why if gate else None)


def report_view(s: Session, svc: Services, audit: db.Audit, policy: str | None, scopes: frozenset[str]
                ) -> tuple[view.ReportView, tuple | None]:
    """The report's view, with its plots drawn, and the key it is kept under (None while the audit is
    unfinished)."""
    out: AuditOut = audit_out(audit)
    edit = s.get(db.Edit, audit.edit_id)
    gate = gate_of(s, edit, policy, scopes) if policy and edit is not None else None
    key = cache_key(audit, gate)

    def make() -> view.ReportView:
        v = view.build(out, edit_facts(s, edit) if edit is not None else None, gate,
                       gallery_of(svc, audit, class_names(s, edit)))
        v.figures = plots.figures(v.audit)
        return v

    return _cached(None if key is None else ("view", *key), make), key


def audit_context(s: Session, svc: Services, audit: db.Audit, policy: str | None, scopes: frozenset[str]) -> dict:
    """What report/audit.html.j2 renders: {"report": ReportView}. `scopes`: the caller's (the verdict needs
    gate:read)."""
    v, _ = report_view(s, svc, audit, policy, scopes)
    return {"report": v}


def audit_report(s: Session, svc: Services, audit: db.Audit, fmt: str, policy: str | None,
                 scopes: frozenset[str], link: str | None = None) -> str:
    """The report of `audit` in `fmt` (json | md | html), led by the gate verdict under `policy` when one is named
    and the caller holds gate:read; `link` is the full report's URL the Markdown one points to."""
    v, key = report_view(s, svc, audit, policy, scopes)
    if fmt not in CACHED_FORMATS:
        return RENDERERS[fmt](replace(v, link=link))
    return _cached(None if key is None else (fmt, *key), lambda: RENDERERS[fmt](v))
