"""`/healthz` body."""

from pydantic import BaseModel, Field


class WorkerHealth(BaseModel):
    alive: bool = Field(description="the embedded worker process is running")
    restarts: int = Field(description="times the supervisor restarted it since the server started")


class HealthOut(BaseModel):
    status: str
    worker: WorkerHealth | None = Field(None, description="the embedded mode's local worker; absent when workers "
                                        "run elsewhere (production)")


class ReadyOut(BaseModel):
    status: str
    checks: dict[str, str] = Field(description="database, migrations, broker, store, worker: ok or why not")
