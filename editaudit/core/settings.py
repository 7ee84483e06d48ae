"""Typed settings, read from `EDITAUDIT_*` environment variables (and a `.env` file).

Unset URLs fall back to the embedded default under `data_dir`: a SQLite file, a local object directory and a
filesystem broker, so `editaudit serve` needs nothing installed beyond pip. Production sets the three URLs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from editaudit.contracts.formats.archive import ArchiveLimits

MIN_TOKEN_CHARS = 24


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDITAUDIT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("editaudit-data"), description="embedded mode: database, objects and broker live here")
    database_url: str | None = Field(None, description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db")
    broker_url: str | None = Field(None, description="Celery broker, e.g. redis://host:6379/0")
    store_url: str | None = Field(None, description="file:///path or s3://bucket[/prefix]")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO), e.g. http://minio:9000")
    s3_region: str = "us-east-1"
    api_token: str | None = Field(None, description="a bootstrap admin key of tenant `default` (the compose file "
                                  "sets it from .env); further keys: `editaudit keys create`")
    metrics_token: str | None = Field(None, description="the operator's secret for /metrics: a scrape presenting "
                                      "`Authorization: Bearer <it>` also gets the job figures, which count every "
                                      "tenant's jobs (edits by status, audit durations); unset: /metrics shows only "
                                      "the public figures. Not an API key: it opens nothing else")
    body_timeout_s: float = Field(30, gt=0, description="a JSON body must arrive within this, and an upload must "
                                  "bring body_min_bytes in every such span of waiting for it (408 otherwise)")
    body_min_bytes: int = Field(1024 * 1024, ge=0, description="the least an upload must deliver per body_timeout_s "
                                "spent waiting for it (or the rest of its body): a slower one is cut off with 408; "
                                "0: no minimum rate")
    # connection-level limits (editaudit.service.server): what a front proxy would enforce, enforced by the API too
    header_timeout_s: float = Field(10, gt=0, description="a connection's request head must arrive within this after "
                                    "it connects, and after each response; otherwise it is closed")
    max_connections: int = Field(10_000, ge=16, description="open client connections at once (lowered at start to "
                                 "fit the file descriptor limit); at the cap the oldest idle connection is closed to "
                                 "make room, or, with none idle, the new one")
    max_connections_per_ip: int = Field(256, ge=0, description="open connections from one client address (more are "
                                        "closed as they arrive); 0: no per-address cap (behind a front proxy, or "
                                        "list the proxy in connection_exempt_ips)")
    connection_exempt_ips: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"], description="addresses "
                                             "or networks (JSON list) free of the per-address cap, which may also "
                                             "use connection_headroom: the loopback health probe")
    connection_headroom: int = Field(32, ge=0, description="connections beyond max_connections that exempt addresses "
                                     "may still open when every open connection is inside a request")
    key_cache_s: float = Field(5, ge=0, description="how long a key lookup is cached (a revoked key stops working "
                               "within this time)")
    console: bool = Field(True, description="serve the read-only web console at /console (docs/console.md); "
                          "false: no route of it exists and its cookie is never read")
    max_upload_mb: int = Field(2048, ge=1)
    max_safetensors_header_mb: float = Field(8, gt=0, le=100, description="a checkpoint's JSON header (tensor "
                                             "names, dtypes, shapes) is at most this; a larger one is refused "
                                             "(422) before it is read. 8 MiB holds ~100k tensor entries")
    archive_max_members: int = Field(200_000, ge=1, description="entries in one image-folder archive (directories "
                                     "and skipped files count)")
    archive_max_image_pixels: int = Field(40_000_000, ge=1, description="width x height of one image in an archive, "
                                          "read from its header before anything decodes it")
    archive_max_pixels: int = Field(16_000_000_000, ge=1, description="pixels in one archive, all images together")
    archive_max_expanded_mb: int = Field(65_536, ge=1, description="bytes an archive's members expand to (a gzip or "
                                         "zip bomb stops here)")
    queue: str = "editaudit"
    device: str = Field("auto", description="worker device: auto | cpu | cuda | cuda:N")
    torch_threads: int | None = Field(None, ge=1, le=1024, description="CPU threads each worker process gives torch "
                                      "(torch.set_num_threads); unset: torch's default (the cores it sees). Workers "
                                      "sharing a host's cores run faster with their share each (docs/operations.md)")
    audit_shard_samples: int | None = Field(None, ge=1, description="samples per audit shard (rounded to whole "
                                            "batches); shards run in parallel on every worker and merge into the "
                                            "same numbers as one. Unset: about 2**24 input values per shard (5461 "
                                            "images of 3x32x32, 111 of 3x224x224), at least one batch")
    audit_keep_images: int = Field(8, ge=0, le=256, description="inputs kept per audit, condition and direction "
                                   "(broken | fixed) for GET /audits/{id}/samples/{index}/image")
    plugins: list[str] = Field(default_factory=list, description="modules to import at start (see core/plugins.py)")
    visibility_timeout_s: int = Field(6 * 3600, ge=60, description="broker redelivery timeout; above the longest job")
    job_time_limit_s: float = Field(5 * 3600, ge=1, description="an attempt running longer fails (checked between "
                                    "batches), and its heartbeat stops, so a hung one loses its lease; must be "
                                    "below visibility_timeout_s")
    max_job_passes: int = Field(200_000_000, ge=1, description="cost budget of one edit request, in model passes "
                                "over one image (editaudit.contracts.cost); larger requests are refused with 422")
    lease_s: float = Field(60, ge=1, description="a running job's lease: renewed by its heartbeat every third of it; "
                           "once it lapses another worker may take the job over")
    max_attempts: int = Field(3, ge=1, description="attempts (leases taken) before a job whose worker keeps "
                              "disappearing is marked failed")
    worker_alive_file: Path | None = Field(None, description="touched by each worker's reconciler every pass; "
                                           "`python -m editaudit.worker.health` checks its age (the compose "
                                           "health check: it holds during a long job)")
    reconcile_every_s: float = Field(15, ge=0.2, description="how often each worker looks for lapsed leases and "
                                     "queued jobs whose message was lost")
    worker_stale_s: float = Field(120, gt=0, description="a worker whose last heartbeat (written every "
                                  "reconcile_every_s, even during a job) is older than this counts as gone: /readyz "
                                  "warns when no worker is fresher (it stays 200)")
    requeue_after_s: float = Field(120, ge=1, description="a job still queued this long after it was sent is sent "
                                   "again (a duplicate message finds the job leased and is dropped)")
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line with its "
                                                "request_id / edit_id (editaudit.core.logs); text: uvicorn's and "
                                                "Celery's own formats")
    api_threads: int = Field(40, ge=1, description="the API's threadpool (anyio tokens) and how many requests are "
                             "inside the app at once (editaudit.service.admission); each may hold a connection")
    db_pool_size: int = Field(10, ge=1, description="Postgres connections kept open per process")
    db_max_overflow: int = Field(30, ge=0, description="connections opened beyond db_pool_size under load")
    db_pool_timeout_s: float = Field(3, gt=0, description="a request waits this long for its turn, or for a free "
                                     "connection, then answers 503 with Retry-After")
    webhook_allowed_hosts: list[str] = Field(default_factory=list, description="hosts webhooks may be sent to, "
                                             "as a JSON list: `hooks.example.com` (any port), `ci.example.com:8443` "
                                             "(that port), `*.example.com` (its subdomains); empty: webhooks are "
                                             "off (editaudit.core.webhooks)")
    webhook_max_attempts: int = Field(8, ge=1, le=50, description="attempts to deliver one webhook event before "
                                      "it is marked failed")
    webhook_backoff_s: float = Field(5, gt=0, description="the first retry's delay; later ones grow from it (x6, "
                                     "x24, x120, x720: 5 s, 30 s, 2 min, 10 min, 1 h), with jitter")

    @model_validator(mode="after")
    def _limit_below_visibility(self):
        if self.job_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(f"job_time_limit_s ({self.job_time_limit_s}) must be below visibility_timeout_s "
                             f"({self.visibility_timeout_s}): the broker would redeliver a job still running")
        return self

    @model_validator(mode="after")
    def _pool_covers_threads(self):
        if self.db_pool_size + self.db_max_overflow < self.api_threads:
            raise ValueError(f"db_pool_size + db_max_overflow ({self.db_pool_size} + {self.db_max_overflow}) must "
                             f"be at least api_threads ({self.api_threads}): requests would wait for a connection")
        return self

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _allowed_host_patterns(cls, v: list[str]) -> list[str]:
        if v:
            from editaudit.core.webhooks import parse_allowed

            for entry in v:
                parse_allowed(entry)  # ValueError naming the entry
        return v

    @field_validator("connection_exempt_ips")
    @classmethod
    def _exempt_networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"connection_exempt_ips: {entry!r} is not an IP address or network") from None
        return v

    @field_validator("api_token", "metrics_token")
    @classmethod
    def _no_default_secret(cls, v: str | None, info: ValidationInfo) -> str | None:
        env = f"EDITAUDIT_{(info.field_name or '').upper()}"
        if v is not None and v.strip().lower() in {"", "changethis", "secret", "token", "changeme"}:
            raise ValueError(f"{env} is set to a placeholder; choose a real secret or unset it")
        if v is not None and len(v) < MIN_TOKEN_CHARS:  # a secret short enough to guess is no secret
            raise ValueError(f"{env} must be at least {MIN_TOKEN_CHARS} characters (e.g. python -c "
                             "\"import secrets; print(secrets.token_urlsafe(32))\")")
        return v

    @property
    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(self.archive_max_members, self.archive_max_image_pixels, self.archive_max_pixels,
                             self.archive_max_expanded_mb * 1024 * 1024)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'editaudit.db').resolve()}"

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or (self.data_dir / "objects").resolve().as_uri()

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def embedded(self) -> bool:
        return self.broker_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
