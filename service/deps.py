"""What routes share: settings, database sessions, the object store, the queue producer (built once per app) and
the caller (the principal the edge layer authenticated).

A route's database session is its caller's tenant's (editaudit.core.db.tenant_session): every query it runs sees
only that tenant's rows and every row it adds is that tenant's, whether or not the route remembers to filter.
`Services.sessions` is the plain factory: its sessions refuse tenant-owned tables, so it cannot stand in for one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from editaudit.core import db
from editaudit.core.keys import Principal
from editaudit.core.queue import enqueue
from editaudit.core.settings import Settings
from editaudit.core.storage import ObjectStore
from editaudit.service.errors import Problem


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker  # plain: wrap with db.tenant_session / db.unscoped_session (see the module's docstring)
    store: ObjectStore
    celery: object  # celery.Celery; used only to send tasks by name
    # requests without a key act as tenant `default` with every scope while no key exists: only `editaudit serve`
    # on a loopback address turns it on (an argument of create_app, never a setting: no env var can open a server)
    allow_anonymous: bool = False

    def enqueue(self, task: str, *args) -> None:
        enqueue(self.celery, self.settings, task, *args)


def services(request: Request) -> Services:
    return request.app.state.services


def principal(request: Request) -> Principal:
    """Set by editaudit.service.edge from the API key; a route reached without one is a wiring bug, refused."""
    found = request.scope.get("state", {}).get("principal")
    if found is None:
        raise Problem(401, "a valid API key is required", field="Authorization")
    return found


def session(svc: Annotated[Services, Depends(services)],
            caller: Annotated[Principal, Depends(principal)]) -> Iterator[Session]:
    """The request's session, scoped to the tenant of the caller's key (never a client header)."""
    with db.tenant_session(svc.sessions, caller.tenant) as s:
        yield s


def tenant_sessions(svc: Annotated[Services, Depends(services)],
                    caller: Annotated[Principal, Depends(principal)]) -> Callable[[], Session]:
    """Opens more sessions of the caller's tenant (what must commit apart from the request's own: idempotency)."""
    return partial(db.tenant_session, svc.sessions, caller.tenant)


SvcDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
SessionDep = Annotated[Session, Depends(session)]
TenantSessionsDep = Annotated[Callable[[], Session], Depends(tenant_sessions)]
