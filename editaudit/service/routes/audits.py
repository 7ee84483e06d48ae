"""`/audits/{id}`: the measured numbers of baseline vs candidate, keyed by DESIGN.md's metric names."""

from __future__ import annotations

from fastapi import APIRouter, Response

from editaudit.service import db
from editaudit.service.deps import SessionDep, TenantDep
from editaudit.service.errors import Problem, not_found
from editaudit.service.schemas import AuditOut

router = APIRouter(tags=["audits"])


def audit_dict(audit: db.Audit) -> dict:
    r = audit.result or {}
    return AuditOut(id=audit.id, status=audit.status, edit_id=audit.edit_id,
                    metrics=r.get("metrics", {"baseline": {}, "candidate": {}}), deltas=r.get("deltas", {}),
                    samples=r.get("samples"), durations_s=r.get("durations_s"), device=r.get("device"),
                    curves=r.get("curves"), baseline_cached=r.get("baseline_cached"),
                    intervals=r.get("intervals"), notes=r.get("notes"),
                    alpha_curve=r.get("alpha_curve"), mli=r.get("mli"), sweep=r.get("sweep"),
                    config=audit.config, versions=audit.versions, created_at=audit.created_at,
                    finished_at=audit.finished_at).model_dump()


@router.get("/audits/{audit_id}", response_model=AuditOut)
def get_audit(audit_id: str, s: SessionDep):
    audit = s.get(db.Audit, audit_id)
    if audit is None:
        raise not_found("audit", audit_id)
    return audit_dict(audit)


REPORT_TYPES = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8",
                "xml": "application/xml"}


@router.get("/audits/{audit_id}/report.{fmt}")
def get_report(audit_id: str, fmt: str, s: SessionDep, tenant: TenantDep, policy: str = "default"):
    """json (versioned), md (PR comment), html (self-contained, with plots), xml (JUnit: the gate under `policy`)."""
    from editaudit.service import reports

    if fmt not in REPORT_TYPES:
        raise Problem(404, f"no report format {fmt!r}; valid: {sorted(REPORT_TYPES)}", field="fmt")
    audit = s.get(db.Audit, audit_id)
    if audit is None:
        raise not_found("audit", audit_id)
    data = audit_dict(audit)
    if fmt == "xml":
        from editaudit.service.gate import GateResult, RuleOutcome, as_junit
        from editaudit.service.routes.gate import gate_for

        result = gate_for(s, tenant, audit.edit_id, policy)
        body = as_junit(GateResult(result["verdict"], [RuleOutcome(**r) for r in result["rules"]]),
                        suite=f"editaudit gate {audit.edit_id}")
    else:
        body = {"json": reports.as_json, "md": reports.as_markdown, "html": reports.as_html}[fmt](data)
    return Response(body, media_type=REPORT_TYPES[fmt])
