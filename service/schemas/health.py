"""`/healthz` body."""

from pydantic import BaseModel, Field


class WorkerHealth(BaseModel):
    alive: bool = Field(description="the embedded worker process is running")
    restarts: int = Field(description="times the supervisor restarted it since the server started")


class HealthOut(BaseModel):
    status: str
    worker: WorkerHealth | None = Field(None, description="the embedded mode's local worker; absent when workers "
                                        "run elsewhere (production)")


class WorkerBeat(BaseModel):
    age_s: float = Field(description="seconds since the worker's last heartbeat (its reconciler thread beats every "
                         "reconcile_every_s, even while a job runs)")
    fresh: bool = Field(description="beaten within worker_stale_s")


class ReadyOut(BaseModel):
    status: str
    checks: dict[str, str] = Field(description="database, migrations, broker, store: ok or why not (any not ok: "
                                   "503)")
    workers: dict[str, WorkerBeat] = Field(default_factory=dict, description="each worker's heartbeat, by name "
                                           "(informational: busy or absent workers never make the API unready)")
    warnings: list[str] = Field(default_factory=list, description="what an operator should look at that does not "
                                "stop this API from serving, e.g. no worker has beaten recently")
