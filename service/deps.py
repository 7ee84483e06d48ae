"""What routes share: settings, database sessions, the object store, the queue producer (built once per app) and
the caller (the principal the edge layer authenticated)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from editaudit.core.keys import Principal
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
    # requests without a key act as tenant `default` with every scope while no key exists: only `editaudit serve`
    # on a loopback address turns it on (an argument of create_app, never a setting: no env var can open a server)
    allow_anonymous: bool = False

    def enqueue(self, task: str, *args) -> None:
        enqueue(self.celery, self.settings, task, *args)


def services(request: Request) -> Services:
    return request.app.state.services


def session(svc: Annotated[Services, Depends(services)]) -> Iterator[Session]:
    with svc.sessions() as s:
        yield s


def principal(request: Request) -> Principal:
    """Set by editaudit.service.edge from the API key; a route reached without one is a wiring bug, refused."""
    found = request.scope.get("state", {}).get("principal")
    if found is None:
        raise Problem(401, "a valid API key is required", field="Authorization")
    return found


def tenant(caller: Annotated[Principal, Depends(principal)]) -> str:
    """The tenant that owns everything the request reads or creates: the key's, never a client header."""
    return caller.tenant


SvcDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
TenantDep = Annotated[str, Depends(tenant)]
SessionDep = Annotated[Session, Depends(session)]
