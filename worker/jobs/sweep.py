"""A layer sweep: one sub-edit per layer, run one after another in one job, compared in the sweep's audit."""

from __future__ import annotations

import logging
import math

from editaudit.contracts import metrics
from editaudit.contracts.audit_result import AuditResult
from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.contracts.statuses import ACTIVE, Status
from editaudit.core import db, repo, webhooks
from editaudit.core.settings import Settings
from editaudit.core.storage import ObjectStore
from editaudit.worker.jobs.cache import versions
from editaudit.worker.jobs.lease import Lease, heartbeat, held, take
from editaudit.worker.jobs.persist import finish, json_safe
from editaudit.worker.jobs.run import run_single_edit

log = logging.getLogger(__name__)


def run_sweep(settings: Settings, sessions, store: ObjectStore, sweep_id: str, dispatch=None) -> None:
    """Sub-edits in the order the request named the layers, sharing the cached baseline evaluation. The sweep's
    audit holds the comparison table. Under redelivery finished sub-edits are skipped, a `running` one is redone;
    whatever goes wrong, the sweep ends failed with a reason, never `running`. The sweep holds its own lease while
    each sub-edit holds one of its own."""
    with sessions() as s:
        token = take(s, sweep_id, settings.lease_s, settings.max_attempts)
        if token is None:
            return
        parent = s.get(db.Edit, sweep_id)
        plan = [(c.id, c.layers[0]) for c in repo.sub_edits(s, parent)]
        audit = repo.audit_of(s, sweep_id)
        audit.status, audit_id = Status.running, audit.id
        s.commit()
    lease = Lease(sessions, sweep_id, token, settings.lease_s, settings.job_time_limit_s)
    with heartbeat(lease):
        _sweep(settings, sessions, store, sweep_id, plan, audit_id, lease, dispatch)


def _sweep(settings: Settings, sessions, store: ObjectStore, sweep_id: str, plan: list, audit_id: str,
           lease: Lease, dispatch=None) -> None:
    try:
        for i, (child_id, layer) in enumerate(plan):
            with sessions() as s:
                parent = s.get(db.Edit, sweep_id)
                if parent.status == Status.canceled or parent.lease_token != lease.token:
                    return
                parent.progress = {"stage": "sweep", "done": i, "total": len(plan), "layer": layer}
                s.commit()
            try:
                run_single_edit(settings, sessions, store, child_id, dispatch)
            except Exception as exc:  # noqa: BLE001 - one layer's failure is a row of the table, not the sweep's end
                log.exception("sweep %s: sub-edit %s", sweep_id, child_id)
                finish(sessions, child_id, Status.failed, f"{type(exc).__name__}: {exc}", only_if=ACTIVE)
        with sessions() as s:
            rows = [sweep_row(s, child_id, layer) for child_id, layer in plan]
            bad = {r["layer"]: r["status"] for r in rows if r["status"] != Status.succeeded}
            table = sweep_table(rows)
            info = {"sweep": {"sub_edits": [{"layer": r["layer"], "edit_id": r["edit_id"]} for r in rows],
                              "best": table["best"]}}
            status = Status.failed if bad else Status.succeeded
            done = s.query(db.Edit).filter(held(sweep_id, lease.token)).update(
                {"status": status, "info": info, "finished_at": db.utcnow(), "lease_token": None,
                 "error": f"sub-edits did not succeed: {bad}; see the sweep table" if bad else None,
                 "progress": {"stage": "done", "done": len(plan), "total": len(plan)}}, synchronize_session=False)
            if done:  # not canceled meanwhile, and no other attempt took over
                audit = s.get(db.Audit, audit_id)
                audit.status, audit.finished_at, audit.versions = status, db.utcnow(), versions()
                audit.result = json_safe(AuditResult(sweep=table).stored())
                webhooks.edit_finished(s, s.get(db.Edit, sweep_id))
            s.commit()
    except Exception as exc:  # noqa: BLE001 - never leave a sweep `running`
        log.exception("sweep %s failed", sweep_id)
        finish(sessions, sweep_id, Status.failed, f"the sweep failed: {type(exc).__name__}: {exc}", token=lease.token)


def sweep_row(s, edit_id: str, layer: str) -> dict:
    """A sub-edit's line of the comparison: status, summary candidate metrics and their deltas, edit info."""
    edit = s.get(db.Edit, edit_id)
    result = AuditResult.from_stored(repo.audit_of(s, edit_id).result)
    keep = lambda name: (m := metrics.parse(name)) is None or m.summary  # noqa: E731 - per-type is noise here
    info = edit.info or {}
    return {"layer": layer, "edit_id": edit_id, "status": edit.status, "error": edit.error,
            "edited_model_id": edit.edited_model_id,
            "metrics": {k: v for k, v in result.metrics.candidate.items() if keep(k)},
            "deltas": {k: d.model_dump(mode="json") for k, d in result.deltas.items() if keep(k)},
            "info": {k: info[k] for k in EDIT_PARAMS[edit.method].sweep_info if k in info}}


def sweep_table(rows: list[dict]) -> dict:
    """The rows plus, for every metric the sub-edits share, the layer with the best candidate value."""
    done = [r for r in rows if r["status"] == Status.succeeded]
    names = sorted(set.intersection(*(set(r["metrics"]) for r in done))) if done else []

    def score(row: dict, name: str) -> float:
        v = row["metrics"][name]
        return -math.inf if v is None else -v if metrics.lower_is_better(name) else v

    best = {n: max(done, key=lambda r: score(r, n))["layer"] for n in names}
    return {"metrics": names, "rows": rows, "best": best}
