"""What routes share: settings, database sessions, the object store and the queue producer (built once per app)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from editaudit.core.queue import enqueue
from editaudit.core.settings import Settings
from editaudit.core.storage import ObjectStore
from editaudit.service.errors import Problem


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker
    store: ObjectStore
    celery: object  # celery.Celery; used only to send tasks by name

    def enqueue(self, task: str, *args) -> None:
        enqueue(self.celery, self.settings, task, *args)


def services(request: Request) -> Services:
    return request.app.state.services


def session(svc: Annotated[Services, Depends(services)]) -> Iterator[Session]:
    with svc.sessions() as s:
        yield s


def require_token(request: Request, svc: Annotated[Services, Depends(services)]) -> None:
    token = svc.settings.api_token
    if token and request.headers.get("authorization", "") != f"Bearer {token}":
        raise Problem(401, "missing or wrong bearer token", field="Authorization")


def tenant(request: Request) -> str:
    """The tenant that owns named policies and aliases: the `X-Editaudit-Tenant` header (set by the gateway in a
    shared deployment), else `default`."""
    value = request.headers.get("x-editaudit-tenant", "default")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", value):
        raise Problem(422, "tenant names are 1-100 letters, digits, '.', '_' or '-'", field="X-Editaudit-Tenant")
    return value


SvcDep = Annotated[Services, Depends(services)]
TenantDep = Annotated[str, Depends(tenant)]
SessionDep = Annotated[Session, Depends(session)]
