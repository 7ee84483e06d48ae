"""Queries the API and the worker share: rows by id (NotFound when absent), finishing an edit, a sweep's sub-edits,
a model's family, dataset facts, named locks and versioned documents. Functions of a session; the caller commits.
None of them filters by tenant: the session does (editaudit.core.db, "Tenant scope"); in an API request's session
another tenant's rows do not exist."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, TypeVar

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from editaudit.contracts.datasets import BUILTIN_DATASETS, is_builtin
from editaudit.contracts.statuses import ACTIVE, TERMINAL, IngestStatus, Status
from editaudit.core import db, webhooks

Row = TypeVar("Row")
log = logging.getLogger(__name__)


class NotFound(LookupError):
    """A resource that does not exist (the API answers 404 naming `field`)."""

    def __init__(self, detail: str, field: str):
        super().__init__(detail)
        self.detail, self.field = detail, field


class NotReady(LookupError):
    """A model or dataset a worker has not finished checking (`validating`), or found unusable (`invalid`): the API
    answers 409 naming `field` (with Retry-After while it is validating)."""

    def __init__(self, detail: str, field: str, status: str):
        super().__init__(detail)
        self.detail, self.field, self.status = detail, field, status


def require_ready(row: db.Model | db.Dataset, field: str) -> None:
    if row.status == IngestStatus.ready:
        return
    kind = KIND_OF[type(row)]
    if row.status == IngestStatus.validating:
        raise NotReady(f"{kind} {row.id} is still validating (a worker is checking it); retry when its status is "
                       "ready", field, row.status)
    raise NotReady(f"{kind} {row.id} is invalid: {row.error}", field, row.status)


KIND_OF: dict[type, str] = {db.Model: "model", db.Dataset: "dataset", db.Edit: "edit", db.Audit: "audit",
                            db.Study: "study", db.Webhook: "webhook"}


def get_or_404(s: Session, table: type[Row], id_: str, field: str | None = None) -> Row:
    """The row with this id, or NotFound naming `field` (default `<kind>_id`). In a tenant session another
    tenant's row is not found (the session's criterion), answered exactly like a missing one."""
    row = s.get(table, id_)
    if row is None:
        kind = KIND_OF[table]
        raise NotFound(f"no {kind} with id {id_!r}", field or ("id" if kind == "audit" else f"{kind}_id"))
    return row


def audit_of(s: Session, edit_id: str) -> db.Audit:
    return s.scalars(select(db.Audit).filter_by(edit_id=edit_id)).one()


def finish_edit(s: Session, edit: db.Edit, status: Status, error: str | None) -> None:
    """Mark an edit and its audit finished (failed / canceled), releasing the edit's lease; its webhook event is
    written in the same transaction (once: an edit that had already ended emits nothing again)."""
    now, ended = db.utcnow(), edit.status in TERMINAL
    edit.status, edit.error, edit.finished_at, edit.lease_token = status, error, now, None
    for audit in s.scalars(select(db.Audit).filter_by(edit_id=edit.id)):
        audit.status, audit.finished_at = status, now
        for shard in s.scalars(select(db.AuditShard).filter(db.AuditShard.audit_id == audit.id,
                                                            db.AuditShard.status.in_(ACTIVE))):
            shard.status, shard.lease_token, shard.finished_at = status, None, now  # its worker stops at a batch
    if not ended:
        webhooks.edit_finished(s, edit)


def sub_edits(s: Session, edit: db.Edit) -> list[db.Edit]:
    """A layer sweep's sub-edits in the order of its layers (empty for an ordinary edit)."""
    if not edit.sweep:
        return []
    order = {layer: i for i, layer in enumerate(edit.layers)}
    return sorted(s.scalars(select(db.Edit).filter_by(sweep_id=edit.id)), key=lambda e: order[e.layers[0]])


def ancestors(s: Session, model_id: str) -> list[db.Model]:
    """A model's lineage, root first, ending with the model itself: each model's parent until one has none (a
    parent the session cannot see, or a cycle, ends the walk too)."""
    chain: list[db.Model] = []
    seen: set[str] = set()
    row = s.get(db.Model, model_id)
    while row is not None and row.id not in seen:
        seen.add(row.id)
        chain.append(row)
        row = s.get(db.Model, row.parent_model_id) if row.parent_model_id else None
    return chain[::-1]


def family_of(s: Session, model_id: str) -> str:
    """The root model of a lineage: aliases are per family (the original checkpoint and all its edits)."""
    seen = set()
    while model_id not in seen:
        seen.add(model_id)
        model = s.get(db.Model, model_id)
        assert model is not None, f"model {model_id} of a lineage is missing"
        parent = model.parent_model_id
        if parent is None:
            return model_id
        model_id = parent
    return model_id


def dataset_facts(s: Session, ref: str, field: str) -> dict:
    """n, shape, largest label and whether it carries x_orig, of a dataset id (one the session sees) or builtin
    name; NotFound naming `field` when unknown."""
    if is_builtin(ref):
        if ref not in BUILTIN_DATASETS:
            raise NotFound(f"unknown built-in dataset {ref!r}; valid: {sorted(BUILTIN_DATASETS)}", field)
        b = BUILTIN_DATASETS[ref]
        return {"n": b["n"], "shape": b["shape"], "label_max": b["num_classes"] - 1, "has_x_orig": False}
    row = s.get(db.Dataset, ref)
    if row is None:
        raise NotFound(f"no dataset with id {ref!r}", field)
    require_ready(row, field)
    return {"n": row.n, "shape": row.shape, "label_max": row.label_max, "has_x_orig": row.has_x_orig,
            "classes": None if (row.options or {}).get("class_to_idx") else row.classes}


def serialise(s: Session, table: type[Any], *name: str) -> None:
    """Hold, until the session's transaction ends, the lock of the session tenant's `name` in `table`: code that reads
    a named thing and then writes what depends on it (a document's next version, what an alias served before a
    promotion) takes it first, so such writers run one at a time and each reads what the one before it committed,
    whether the row exists yet or not. Postgres: a transaction-scoped advisory lock on a 64-bit hash of (table,
    tenant, name): writers of other names do not wait. SQLite: the database's write lock (it has one writer at a
    time whatever the name), taken now by an UPDATE that matches nothing, as BEGIN IMMEDIATE would; reads after it
    see every committed write. Call it before the transaction's first read of the thing it guards."""
    tenant = db.session_tenant(s)
    bind = s.connection()
    if bind.dialect.name == "postgresql":
        digest = hashlib.sha256("\x00".join((table.__tablename__, tenant, *name)).encode()).digest()
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int.from_bytes(digest[:8], "big", signed=True)})
    else:
        s.execute(text(f"UPDATE {table.__tablename__} SET id = id WHERE 1 = 0"))


def upload_key(*parts) -> str:
    """What makes two uploads of a tenant the same one (a model: its weights' sha256 and its spec): a digest of the
    parts in canonical JSON. Unique per tenant (models.upload_key, datasets.upload_key: migration 0012), so identical
    uploads are one row however many arrive at once. Migration 0012 computes the same for the rows before it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


Versioned = TypeVar("Versioned", bound=db.TenantVersioned)


def _tablename(table: type[Any]) -> str:
    return str(table.__tablename__)  # a mapped class's (the TenantVersioned mixin does not declare it)


def latest_version(s: Session, table: type[Versioned], name: str, version: int | None = None) -> Versioned | None:
    """The given version of the session tenant's named document, or its latest one; None when there is none."""
    db.session_tenant(s)  # names are per tenant: in a session that sees every tenant the answer would be anyone's
    q = select(table).filter_by(name=name)
    q = q.filter_by(version=version) if version else q.order_by(table.version.desc())
    return s.scalars(q.limit(1)).first()


VERSION_ATTEMPTS = 5


def add_version(s: Session, table: type[Versioned], name: str, **document) -> tuple[Versioned, bool]:
    """(the version, whether this call created it), committed: a new version of the session tenant's named document
    (1 for a new name), or the latest one unchanged when it holds the same document (a re-POST is not a new version).
    Writers of one name take its lock (`serialise`), so concurrent ones get distinct, consecutive versions and never
    the unique constraint; if a writer that does not lock (an older process) takes the number first, this retries."""
    for attempt in range(1, VERSION_ATTEMPTS + 1):
        serialise(s, table, name)
        latest = latest_version(s, table, name)
        if latest is not None and all(getattr(latest, k) == v for k, v in document.items()):
            s.commit()  # ends the transaction: the lock goes
            return latest, False
        row = table(**{"name": name, "version": (latest.version + 1) if latest else 1, **document})
        s.add(row)
        try:
            s.commit()
            return row, True
        except IntegrityError:
            s.rollback()
            if attempt == VERSION_ATTEMPTS:
                raise  # the API answers 409 (editaudit.service.errors)
            log.warning("version %s of %s %r was taken concurrently; retrying", row.version, _tablename(table), name)
    raise AssertionError("unreachable")


def version_names(s: Session, table: type[Versioned]) -> list[str]:
    db.session_tenant(s)
    return sorted(s.scalars(select(table.name).distinct()).all())
