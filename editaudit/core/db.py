"""SQLAlchemy 2 tables and engines. Postgres is the source of truth for job state; the broker only carries work.
Queries that several callers share live in editaudit.core.repo."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    mapped_column,
    sessionmaker,
    with_loader_criteria,
)

from editaudit.contracts.statuses import IngestStatus, Status
from editaudit.core.settings import get_settings


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """DateTime(timezone=True) that reads back as UTC-aware on SQLite too (it stores no offset), so the API prints
    the same instant the same way whichever database it runs on."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class TenantOwned:
    """Every row of a table with a `tenant` column belongs to that tenant. Isolation is the session's, not each
    query's (see "Tenant scope" below): in a tenant session every ORM statement on these tables is filtered to its
    tenant and new rows are stamped with it; there is no column default, so a row written elsewhere must name its
    tenant (an unscoped session refuses one that does not)."""

    tenant: Mapped[str] = mapped_column(String(100), index=True)


class Model(TenantOwned, Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant", "upload_key", name="uq_models_tenant_upload_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # an uploaded model's identity in its tenant (repo.upload_key of its sha256 and spec): identical uploads are one
    # row however many arrive at once; NULL for edited models (the worker's) and duplicates from before 0012
    upload_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    arch: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict] = mapped_column(JSON)
    object_key: Mapped[str] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    parent_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    edit_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # `validating` until a worker has checked a checkpoint the API cannot (timm, Hugging Face), then `ready` or
    # `invalid` (`error` says why); `spec` is then the resolved spec and `info` what the check found (module table)
    status: Mapped[str] = mapped_column(String(16), default=IngestStatus.ready, server_default=IngestStatus.ready)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    info: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    ingested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Dataset(TenantOwned, Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant", "upload_key", name="uq_datasets_tenant_upload_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # the content's sha256 (what makes two uploads of a tenant the same dataset), unique per tenant; NULL for
    # duplicates from before 0012
    upload_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    filename: Mapped[str] = mapped_column(String(300))
    object_key: Mapped[str] = mapped_column(String(300))
    n: Mapped[int] = mapped_column(Integer)
    shape: Mapped[list] = mapped_column(JSON)
    label_max: Mapped[int] = mapped_column(BigInteger)  # labels are int64
    has_x_orig: Mapped[bool] = mapped_column(default=False)
    has_mask: Mapped[bool] = mapped_column(default=False)
    # an image-folder archive is `validating` until the ingest job has decoded it into shards (`manifest`), then
    # `ready` or `invalid` (`error` names the member); tensor uploads are `ready` at once
    status: Mapped[str] = mapped_column(String(16), default=IngestStatus.ready, server_default=IngestStatus.ready)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    classes: Mapped[list | None] = mapped_column(JSON, nullable=True)  # class names, index = label
    manifest: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # a sharded dataset's shards
    options: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # import options: resize, crop, class_to_idx
    progress: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # the ingest job's {"done", "total"}
    ingested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Edit(TenantOwned, Base):
    __tablename__ = "edits"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    method: Mapped[str] = mapped_column(String(64))
    layers: Mapped[list] = mapped_column(JSON)
    hyperparams: Mapped[dict] = mapped_column(JSON)
    edit_set: Mapped[str] = mapped_column(String(64))
    generalization_set: Mapped[str | None] = mapped_column(String(64), nullable=True)
    test_set: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=Status.queued, index=True)
    progress: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    info: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    edited_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # a layer sweep is a parent edit (sweep = True) whose sub-edits, one per layer, point at it with sweep_id
    sweep: Mapped[bool] = mapped_column(default=False)
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("edits.id"), nullable=True, index=True)
    # the changed tensors of model.net (their new values), safetensors; applied to the parent they give the edit
    delta_object_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    delta_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reverted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # exactly-once execution: each attempt takes a lease (a fresh token, renewed by its heartbeat); every write of
    # the job is conditional on holding it, so an attempt whose lease lapsed can neither overwrite nor duplicate
    attempt: Mapped[int] = mapped_column(default=0)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # the worker (host:pid) of the attempt that took the lease last
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # a run of a study: the study and the run's position in its expanded grid (editaudit.contracts.studies)
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id"), nullable=True, index=True)
    study_index: Mapped[int | None] = mapped_column(nullable=True)


class Study(TenantOwned, Base):
    """A grid of edits on one model and scenario. Its runs are ordinary edits (edits.study_id), queued, leased,
    reconciled and canceled like any other; its state is theirs (nothing here can drift from them) but for
    `canceled_at`. `request` is the validated request as stored, defaults included."""

    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    request: Mapped[dict] = mapped_column(JSON)
    cells: Mapped[list] = mapped_column(JSON)  # the expanded grid: one entry per run, in study_index order
    depths: Mapped[dict] = mapped_column(JSON)  # layer -> 0..1 position in the model's module order
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Audit(TenantOwned, Base):
    __tablename__ = "audits"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    edit_id: Mapped[str] = mapped_column(ForeignKey("edits.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=Status.queued)
    config: Mapped[dict] = mapped_column(JSON)
    # editaudit.contracts.audit_result.AuditResult without the config (that is `config`, stored once); read it with
    # AuditResult.from_stored, which also reads the shape of before (with a copy of the config, dropped by 0009)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    versions: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # {"tenant", "name", "version"} when the server resolved the config from an audit profile; set by the API only,
    # so a policy that requires a profile cannot be satisfied by a submitter's claim
    profile: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # the per-sample outcomes (editaudit.contracts.formats.samples, Parquet) every statistic was computed from, and
    # the inputs of the first flipped samples per condition (PNG); content-addressed objects in the store
    samples_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    images_key: Mapped[str | None] = mapped_column(String(300), nullable=True)


class AuditShard(TenantOwned, Base):
    """One shard of an audit: a run of whole batches per split that one worker evaluates (baseline and candidate),
    under a lease of its own, as the edit's attempt `coordinator` planned it. Its outcome goes to the store
    (`result_key`); the coordinator merges the shards once all have succeeded (worker/jobs/shards.py)."""

    __tablename__ = "audit_shards"
    __table_args__ = (UniqueConstraint("audit_id", "index"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    audit_id: Mapped[str] = mapped_column(ForeignKey("audits.id"), index=True)
    edit_id: Mapped[str] = mapped_column(ForeignKey("edits.id"))
    index: Mapped[int] = mapped_column()
    coordinator: Mapped[str] = mapped_column(String(32))  # the edit attempt's lease token that planned it
    plan: Mapped[dict] = mapped_column(JSON)  # spans, the resolved audit config, the candidate's object key ...
    status: Mapped[str] = mapped_column(String(16), default=Status.queued)
    attempt: Mapped[int] = mapped_column(default=0)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    result_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TenantVersioned(TenantOwned):
    """A tenant's named document: every POST of a changed document adds a version (one writer of a name at a time:
    repo.serialise), the latest one is in force unless one is named
    (editaudit.core.repo.latest_version / add_version)."""

    __table_args__ = (UniqueConstraint("tenant", "name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(100))  # no index of its own: the unique constraint leads with it
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PolicyVersion(TenantVersioned, Base):
    """A named gate policy of a tenant."""

    __tablename__ = "policies"
    document: Mapped[dict] = mapped_column(JSON)


class AuditProfile(TenantVersioned, Base):
    """A named audit config of a tenant. Edits name it instead of spelling out attacks, so the platform team, not
    the submitter, decides how hard an edit is attacked."""

    __tablename__ = "audit_profiles"
    config: Mapped[dict] = mapped_column(JSON)


class Alias(TenantOwned, Base):
    """`production` (say) of a model family -> the model a deployer should ship."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("tenant", "family", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(100))
    family: Mapped[str] = mapped_column(String(32), index=True)  # the root model of the lineage
    name: Mapped[str] = mapped_column(String(100))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Promotion(TenantOwned, Base):
    """The audit trail: every promotion attempt, its gate verdict and any override reason."""

    __tablename__ = "promotions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(100))
    family: Mapped[str] = mapped_column(String(32), index=True)
    alias: Mapped[str] = mapped_column(String(100))
    edit_id: Mapped[str] = mapped_column(ForeignKey("edits.id"))
    model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    previous_model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    policy: Mapped[dict] = mapped_column(JSON)  # {"name", "version"} or the inline document
    verdict: Mapped[str] = mapped_column(String(8))
    outcome: Mapped[str] = mapped_column(String(16))  # promoted | overridden | refused | reverted
    override_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    gate: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(TenantOwned, Base):
    """An API key: the tenant and actor of every request made with it. Only a hash of the secret is kept; the
    prefix (the token's first characters) lets an operator tell keys apart without holding them. Tenant-owned like
    the rest (a tenant session sees only its own keys), but read by the edge before there is a tenant, and written by
    `editaudit keys`: both in unscoped sessions."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    name: Mapped[str] = mapped_column(String(100))  # the actor recorded on what the key does
    scopes: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class IdempotencyRecord(TenantOwned, Base):
    """The first response to a create request carrying `Idempotency-Key`: a retry with the same key and payload
    gets it back instead of creating again. `status` is NULL while the first request is still in flight."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant", "key", "route"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    route: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    headers: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Webhook(TenantOwned, Base):
    """A URL of the tenant's that is told about edit, audit and gate events (editaudit.core.webhooks). `secret` is
    the Standard Webhooks signing key (`whsec_` + base64): stored as is, since signing needs it, and shown only in
    the create response. A deleted webhook keeps its row (its deliveries point at it) with `disabled_at` set and the
    secret wiped; it reads as absent."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list] = mapped_column(JSON)  # event types, or ["*"]
    secret: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookDelivery(TenantOwned, Base):
    """The outbox: one row per event and webhook, written in the transaction of the change that caused the event, so
    none is lost if a process dies; workers send it (editaudit.worker.jobs.webhooks) under a lease, retrying with
    backoff. `id` is the Standard Webhooks `webhook-id` (the same on every retry). `dedupe_key` names an event that
    must happen once (an edit's end): a second write of it for the same webhook is dropped."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "dedupe_key"),
                      Index("ix_webhook_deliveries_due", "status", "next_attempt_at"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivering | succeeded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    history: Mapped[list] = mapped_column(JSON, default=list)  # [{attempt, at, status_code, error}], newest last
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WorkerHeartbeat(Base):
    """A worker's liveness: its reconciler thread writes `beat_at` every pass, whatever its job thread is doing (a
    solo-pool worker busy with a 3-hour audit answers no ping, but beats). /readyz and /metrics read the ages
    without pinging anyone. Belongs to no tenant (it names workers, never jobs): any session may touch it."""

    __tablename__ = "worker_heartbeats"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # Celery's hostname, e.g. celery@host-1
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())


def heartbeat_ages(s: Session, now: datetime | None = None) -> dict[str, float]:
    """Worker name -> seconds since its last heartbeat (freshest first)."""
    now = now or utcnow()
    rows = s.execute(select(WorkerHeartbeat.name, WorkerHeartbeat.beat_at).order_by(WorkerHeartbeat.beat_at.desc()))
    return {name: max(0.0, (now - at).total_seconds()) for name, at in rows}


@lru_cache(maxsize=8)
def engine_for(url: str):
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(eng, "connect")
        def _pragmas(conn, _):  # API and worker are two processes on one file: WAL lets them overlap
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return eng
    # sized to the API's threadpool (each sync request may hold a connection: pool_size + max_overflow >=
    # api_threads, checked by Settings), so a burst waits for a thread, not a connection; a saturated pool answers
    # 503 with Retry-After after db_pool_timeout_s, and a connect attempt gives up after 5 s (not a hang)
    cfg = get_settings()
    return create_engine(url, pool_pre_ping=True, pool_size=cfg.db_pool_size, max_overflow=cfg.db_max_overflow,
                         pool_timeout=cfg.db_pool_timeout_s,
                         connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {})


def session_factory(url: str) -> sessionmaker:
    """Sessions that are neither tenant nor unscoped: they may touch only tables no tenant owns (a health probe,
    the migration state). Open them with tenant_session or unscoped_session to touch anything else."""
    return sessionmaker(engine_for(url), expire_on_commit=False)


# --- Tenant scope ---------------------------------------------------------------------------------------------------
# SQLAlchemy's ORM "global filter" recipe (do_orm_execute + with_loader_criteria): a session says whose it is, and
# every ORM statement it runs on a TenantOwned table carries `tenant = <its tenant>` whether or not the query asked.
#
#   tenant_session(factory, tenant)     an API request's (editaudit.service.deps.SessionDep: the caller's tenant)
#   unscoped_session(factory, reason)   sees every tenant: workers, the reconciler, webhook delivery, the edge's
#   unscoped_sessions(factory, reason)  key lookup, `editaudit keys`, operator metrics; the reason says why
#
# A session that is neither (a plain factory's) is refused any statement or write on a TenantOwned table: a
# forgotten scope fails closed instead of reading every tenant. In a tenant session, statements the criterion cannot
# reach are refused too: an ORM INSERT statement, `from_statement`, and Core statements naming a tenant-owned table
# (`select(db.Edit.__table__)`). Not seen by these hooks: `text()` SQL and anything run on `session.connection()`
# directly; such code must filter (or take the tenant from a row the session loaded) itself.
# Session.get() loads through do_orm_execute, so another tenant's id is None; an object can enter a tenant session's
# identity map only through a filtered load, a flush (checked below) or add() of a detached object (checked below),
# so an identity-map hit is the tenant's too. Sessions live for one request or one job: never share one across them.

TENANT = "editaudit.tenant"  # session.info keys
UNSCOPED = "editaudit.unscoped"


class TenantScopeError(RuntimeError):
    """A statement or write that would cross tenants, or that runs on a session that is neither a tenant's nor
    explicitly unscoped."""


def tenant_session(factory: sessionmaker, tenant: str) -> Session:
    """A session that sees and writes only `tenant`'s rows."""
    if not tenant or UNSCOPED in factory.kw.get("info", {}):
        raise TenantScopeError(f"a tenant session needs a tenant and a plain factory (got {tenant!r})")
    return factory(info={TENANT: tenant})


def unscoped_sessions(factory: sessionmaker, reason: str) -> sessionmaker:
    """A factory of sessions that see every tenant (for code that opens many: a job, the reconciler)."""
    if not reason or not reason.strip() or TENANT in factory.kw.get("info", {}):
        raise TenantScopeError("an unscoped session says why it may see every tenant, from a plain factory")
    kw = dict(factory.kw)
    kw["info"] = {**kw.get("info", {}), UNSCOPED: reason}
    return sessionmaker(class_=factory.class_, **kw)


def unscoped_session(factory: sessionmaker, reason: str) -> Session:
    """One session that sees every tenant; `reason` says why (it is kept in session.info)."""
    return unscoped_sessions(factory, reason)()


def session_tenant(s: Session) -> str:
    """The tenant of a tenant session (for messages and responses that name it)."""
    tenant = s.info.get(TENANT)
    if tenant is None:
        raise TenantScopeError("not a tenant session")
    return tenant


def _scope_of(s: Session) -> tuple[str | None, str | None]:
    """(TENANT, tenant), (UNSCOPED, reason) or (None, None)."""
    tenant, reason = s.info.get(TENANT), s.info.get(UNSCOPED)
    if tenant is not None and reason is not None:
        raise TenantScopeError("a session is either a tenant's or unscoped, not both")
    return (TENANT, tenant) if tenant is not None else (UNSCOPED, reason) if reason is not None else (None, None)


@lru_cache(maxsize=1)
def tenant_tables() -> frozenset:
    """The tables of every TenantOwned class."""
    return frozenset(m.local_table for m in Base.registry.mappers if issubclass(m.class_, TenantOwned))


def _owned_tables(statement) -> list[str]:
    from sqlalchemy.sql.util import find_tables

    found = find_tables(statement, include_aliases=True, include_joins=True, include_selects=True, include_crud=True)
    owned = tenant_tables()
    return sorted({t.name for t in found if t in owned})


@event.listens_for(Session, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    """Every statement a session executes: in a tenant session, SELECT (Session.get included), UPDATE and DELETE get
    the tenant criterion on every tenant-owned entity, in joins, subqueries and aliases too, and lazy and refresh
    loads inherit it; in an unscoped session nothing changes; anything else touching a tenant-owned table raises."""
    kind, tenant = _scope_of(state.session)
    if kind == UNSCOPED:
        return
    owned = _owned_tables(state.statement)
    if not owned:
        return
    if kind is None:
        raise TenantScopeError(f"a statement on {owned} in a session that is neither a tenant's nor unscoped: open "
                               "it with db.tenant_session or db.unscoped_session")
    if not state.is_orm_statement or state.is_insert or state.is_from_statement:
        raise TenantScopeError(f"a Core, INSERT or from_statement statement on {owned} in the session of tenant "
                               f"{tenant!r} would bypass the tenant criterion: use ORM select/update/delete and "
                               "Session.add")
    if state.is_column_load or state.is_relationship_load:
        return  # refreshing or lazy-loading an object this session already loaded under the criterion
    state.statement = state.statement.options(
        with_loader_criteria(TenantOwned, lambda cls: cls.tenant == tenant, include_aliases=True))


@event.listens_for(Session, "before_flush")
def _stamp_rows(session: Session, _context, _instances) -> None:
    """New tenant-owned rows of a tenant session get its tenant; a row of another tenant, or any tenant-owned row in
    a session that is neither, refuses to flush; an unscoped session must name the tenant of what it creates."""
    kind, tenant = _scope_of(session)
    for obj in session.new:
        if not isinstance(obj, TenantOwned):
            continue
        if kind == TENANT and obj.tenant is None:
            obj.tenant = tenant
        elif kind == UNSCOPED and obj.tenant is None:
            raise TenantScopeError(f"a new {type(obj).__name__} in an unscoped session ({session.info[UNSCOPED]}) "
                                   "must name its tenant")
    if kind == UNSCOPED:
        return
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, TenantOwned) and (kind is None or obj.tenant != tenant):
            raise TenantScopeError(f"writing a {type(obj).__name__} of tenant {obj.tenant!r} in " + (
                f"the session of tenant {tenant!r}" if kind else "a session that is neither a tenant's nor unscoped"))


@event.listens_for(Session, "detached_to_persistent")
def _check_adopted(session: Session, obj) -> None:
    """add() of an object loaded elsewhere puts it in the identity map, where Session.get() would find it without a
    query: a tenant session adopts only its own tenant's rows."""
    kind, tenant = _scope_of(session)
    if kind != UNSCOPED and isinstance(obj, TenantOwned) and (kind is None or obj.tenant != tenant):
        raise TenantScopeError(f"a {type(obj).__name__} of tenant {obj.tenant!r} cannot join " + (
            f"the session of tenant {tenant!r}" if kind else "a session that is neither a tenant's nor unscoped"))
