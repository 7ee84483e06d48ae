"""The Celery task's body for one audit shard sent to any worker: rebuild the shard's inputs from the edit's rows and
the store (the baseline, the candidate's stored weights, the datasets with the same held-out part and subset), then
run it under its own lease (worker/jobs/shards.py). A shard that is no longer wanted is dropped, and so is one this
worker cannot run on the device its audit runs on (a CPU worker never joins a CUDA audit: the numbers would differ).
The inputs of the last audit are kept for the next shard of the same attempt (a worker usually takes several)."""

from __future__ import annotations

import logging

from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.edits import parse_hyperparams
from editaudit.contracts.statuses import Status
from editaudit.core import db
from editaudit.core.settings import Settings
from editaudit.worker.jobs.persist import load_model
from editaudit.worker.jobs.progress import Canceled
from editaudit.worker.jobs.run import JOB_FIELDS, load_splits, pick_device
from editaudit.worker.jobs.shards import Inputs, attempt_shard, row_dict, take_shard
from editaudit.worker.ml.audit.runner import subset
from editaudit.worker.ml.data import hold_out_for_edit

log = logging.getLogger(__name__)
_LAST: dict = {}  # {"key": (edit id, coordinator token), "inputs": Inputs}: the last audit this process worked on


def run_shard_job(settings: Settings, shard_id: str) -> None:
    from editaudit.worker.jobs import job_parts

    sessions, store = job_parts(settings, "a worker's audit shard: its rows are addressed by id, whichever tenant's")
    with sessions() as s:
        shard = s.get(db.AuditShard, shard_id)
        if shard is None:
            log.info("audit shard %s is gone (its audit was re-planned); dropping the message", shard_id)
            return
        edit = s.get(db.Edit, shard.edit_id)
        if edit.status != Status.running or edit.lease_token != shard.coordinator:
            log.info("audit shard %s: its edit's attempt is over; dropping the message", shard_id)
            return
        device = pick_device(settings.device)
        if device.type != shard.plan["device"]:
            log.info("audit shard %s runs on %s, this worker on %s; leaving it to another", shard_id,
                     shard.plan["device"], device.type)
            return
        token = take_shard(s, shard_id, settings.lease_s, settings.max_attempts)
        if token is None:
            return
        row = row_dict(s.get(db.AuditShard, shard_id))
        job = {c: getattr(edit, c) for c in JOB_FIELDS}
        model = s.get(db.Model, edit.model_id)
        spec, model_key = model.spec, model.object_key

    def inputs() -> Inputs:
        plan = row["plan"]
        key = (row["edit_id"], row["coordinator"])
        if _LAST.get("key") != key:
            _LAST.clear()  # one audit's inputs at a time
            params = parse_hyperparams(job["method"], job["hyperparams"])
            splits = load_splits(job, spec, sessions, store)
            hold_out_for_edit(params, splits)  # the coordinator's held-out part: the same seed, the same rest
            audit_splits, _ = subset(splits, AuditConfig.model_validate(plan["config"]))
            _LAST.update(key=key, inputs=Inputs(load_model(store, model_key, spec),
                                                load_model(store, plan["candidate_key"], spec), audit_splits, device))
        return _LAST["inputs"]

    try:
        attempt_shard(settings, sessions, store, row, token, inputs)
    except Canceled:
        log.info("audit shard %s: its edit was canceled", shard_id)
