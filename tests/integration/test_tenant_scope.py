"""Tenant isolation is the session's, not each query's (editaudit.core.db, "Tenant scope"). The experiment of issue
19 as a test: a `GET /stats` route added by a test, whose query has no tenant filter, answers only the caller's
tenant's counts, and the same route without a scope is refused when the app is built. Below it, the session rules
one by one: Session.get, joins, bulk UPDATE/DELETE, new rows, the identity map, and the statements a tenant session
refuses because its criterion cannot reach them."""

from __future__ import annotations

import uuid

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, insert, inspect, select, text, update

from editaudit.contracts.scopes import Scope
from editaudit.core import db
from editaudit.core.migrate import upgrade
from editaudit.service.app import create_app
from editaudit.service.deps import SessionDep, SvcDep
from editaudit.service.openapi import RouteDeclarationError, op
from tests.conftest import key_headers, make_settings, unscoped


def _model(tenant: str | None = None, **kw) -> db.Model:
    owned = {"tenant": tenant} if tenant else {}
    return db.Model(sha256="0" * 64, arch="editaudit/smallcnn", spec={}, object_key="k", size_bytes=1, **owned, **kw)


def _edit(model_id: str, tenant: str | None = None) -> db.Edit:
    owned = {"tenant": tenant} if tenant else {}
    return db.Edit(model_id=model_id, method="finetune_layer", layers=["fc"], hyperparams={}, edit_set="d",
                   test_set="builtin:digits-test", **owned)


def _seed(factory, counts: dict[str, int]) -> dict[str, list[str]]:
    """`n` models (each with an edit) per tenant, written as an operator would; their ids by tenant."""
    ids: dict[str, list[str]] = {}
    with unscoped(factory)() as s:
        for tenant, n in counts.items():
            for _ in range(n):
                m = _model(tenant)
                s.add(m)
                s.flush()
                s.add(_edit(m.id, tenant))
                ids.setdefault(tenant, []).append(m.id)
        s.commit()
    return ids


def stats_router(scope: Scope | None = Scope.audits_read) -> APIRouter:
    """The experiment's route: counts and ids of whole tables, no tenant in sight."""
    router = APIRouter()

    @router.get("/stats", **op("stats", scope))
    def stats(s: SessionDep):
        return {"models": s.scalar(select(func.count()).select_from(db.Model)),
                "edits": s.scalar(select(func.count(db.Edit.id))),
                "model_ids": sorted(s.scalars(select(db.Model.id))),
                "by_status": dict(s.execute(select(db.Edit.status, func.count()).group_by(db.Edit.status)).all())}

    return router


@pytest.fixture()
def settings(tmp_path):
    settings = make_settings(tmp_path)
    upgrade(settings.resolved_database_url)
    return settings


def test_a_stats_route_without_a_tenant_filter_counts_only_the_callers_tenant(settings):
    a, b = key_headers(settings, "team-a"), key_headers(settings, "team-b", ["audits:read"])
    app = create_app(settings, routers=[stats_router()])
    ids = _seed(app.state.services.sessions, {"team-a": 3, "team-b": 1})
    with TestClient(app) as c:
        theirs, mine = c.get("/stats", headers=a).json(), c.get("/stats", headers=b).json()
        assert mine == {"models": 1, "edits": 1, "model_ids": ids["team-b"], "by_status": {"queued": 1}}
        assert theirs == {"models": 3, "edits": 3, "model_ids": sorted(ids["team-a"]), "by_status": {"queued": 3}}
        assert "stats" in {o["operationId"] for p in c.get("/openapi.json", headers=a).json()["paths"].values()
                           for o in p.values()}  # published, so the tenancy walk visits it like any route
        assert c.get("/stats", headers=key_headers(settings, "team-b", ["gate:read"])).status_code == 403


def test_a_route_without_a_scope_is_refused_when_the_app_is_built(settings):
    with pytest.raises(RouteDeclarationError, match="name the scope"):
        stats_router(scope=None)  # op() itself refuses it
    undeclared = APIRouter()

    @undeclared.get("/stats")  # op() forgotten altogether
    def stats(s: SessionDep):
        return {"models": s.scalar(select(func.count()).select_from(db.Model))}

    with pytest.raises(RouteDeclarationError, match="GET,HEAD /stats|GET /stats"):
        create_app(settings, routers=[undeclared])
    app = create_app(settings)
    app.include_router(undeclared)  # after the build: refused at start-up
    with pytest.raises(RouteDeclarationError, match="/stats"):
        with TestClient(app):
            pass
    with pytest.raises(RouteDeclarationError):
        op("stats", Scope.audits_read, public=True)  # a scope and public contradict each other


def test_the_plain_session_factory_cannot_stand_in_for_the_request_session(settings):
    """A route that opens its own session from the services' factory reads no tenant's rows: it fails closed."""
    router = APIRouter()

    @router.get("/stats-plain", **op("stats_plain", Scope.audits_read))
    def stats_plain(svc: SvcDep):
        with svc.sessions() as s:
            return {"models": s.scalar(select(func.count()).select_from(db.Model))}

    headers = key_headers(settings, "team-a")
    app = create_app(settings, routers=[router])
    _seed(app.state.services.sessions, {"team-a": 1})
    with TestClient(app) as c, pytest.raises(db.TenantScopeError, match="neither a tenant's nor unscoped"):
        c.get("/stats-plain", headers=headers)


# --- the session rules -------------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def factory(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'scope.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")  # shared: the tenants below are this test's alone
        upgrade(url)
    return db.session_factory(url)


@pytest.fixture()
def tenants(factory):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    ids = _seed(factory, {a: 2, b: 1})
    return a, b, ids


def test_get_and_queries_see_only_the_sessions_tenant(factory, tenants):
    a, b, ids = tenants
    with db.tenant_session(factory, a) as s:
        assert s.get(db.Model, ids[b][0]) is None  # a fresh load goes through the criterion
        assert s.get(db.Model, ids[a][0]).tenant == a
        assert sorted(s.scalars(select(db.Model.id).where(db.Model.id.in_(ids[a] + ids[b])))) == sorted(ids[a])
        assert s.query(db.Edit).filter(db.Edit.model_id.in_(ids[b])).count() == 0  # the legacy Query too
        sub = select(db.Model.id).where(db.Model.id.in_(ids[b])).scalar_subquery()
        assert s.scalars(select(db.Edit.id).where(db.Edit.model_id.in_(sub))).all() == []  # and in subqueries
        assert db.session_tenant(s) == a


def test_a_join_is_filtered_on_every_tenant_owned_side(factory, tenants):
    a, b, ids = tenants
    with unscoped(factory)() as s:  # inconsistent on purpose: A's audit of B's edit
        b_edit = s.scalars(select(db.Edit.id).where(db.Edit.model_id == ids[b][0])).one()
        audit = db.Audit(tenant=a, edit_id=b_edit, config={})
        s.add(audit)
        s.commit()
    with db.tenant_session(factory, a) as s:
        assert s.get(db.Audit, audit.id) is not None
        joined = select(db.Audit.id, db.Edit.method).join(db.Edit, db.Edit.id == db.Audit.edit_id)
        assert s.execute(joined.where(db.Audit.id == audit.id)).all() == []  # B's edit is not there to join


def test_bulk_update_and_delete_touch_only_the_sessions_tenant(factory, tenants):
    a, b, ids = tenants
    everyone = ids[a] + ids[b]
    with db.tenant_session(factory, a) as s:
        assert s.execute(update(db.Model).where(db.Model.id.in_(everyone)).values(arch="x")).rowcount == 2
        s.query(db.Model).filter(db.Model.id.in_(everyone)).update({"arch": "y"}, synchronize_session=False)
        s.execute(delete(db.Edit).where(db.Edit.model_id.in_(everyone)))
        s.commit()
    with unscoped(factory)() as s:
        assert s.get(db.Model, ids[b][0]).arch == "editaudit/smallcnn"
        assert {s.get(db.Model, i).arch for i in ids[a]} == {"y"}
        assert s.scalar(select(func.count()).select_from(db.Edit).where(db.Edit.model_id.in_(everyone))) == 1


def test_new_rows_take_the_sessions_tenant_and_no_other(factory, tenants):
    a, b, ids = tenants
    with db.tenant_session(factory, a) as s:
        m = _model()
        s.add(m)
        s.commit()
        assert m.tenant == a  # stamped at flush
        s.add(_model(b))
        with pytest.raises(db.TenantScopeError, match=f"tenant '{b}'"):
            s.flush()
        s.rollback()
        mine = s.get(db.Model, ids[a][0])
        mine.tenant = b  # moving a row to another tenant is writing that tenant's row
        with pytest.raises(db.TenantScopeError):
            s.flush()
        s.rollback()
    with unscoped(factory)() as s:
        s.add(_model())  # no column default: an unscoped writer names the tenant or fails
        with pytest.raises(db.TenantScopeError, match="must name its tenant"):
            s.flush()


def test_the_identity_map_holds_only_the_sessions_tenant(factory, tenants):
    """Sessions are per request (or per job); an object of another tenant cannot be smuggled into one."""
    a, b, ids = tenants
    with unscoped(factory)() as s:
        theirs = s.get(db.Model, ids[b][0])
        s.expunge(theirs)
    with db.tenant_session(factory, a) as s:
        with pytest.raises(db.TenantScopeError, match="cannot join"):
            s.add(theirs)  # add() would put it in the identity map, where get() needs no query
    with db.tenant_session(factory, a) as s:
        copy = s.merge(theirs)  # merge() loads through the criterion: not found, so a new row of B's...
        assert inspect(copy).pending
        with pytest.raises(db.TenantScopeError):
            s.flush()  # ...which this session will not write


def test_statements_the_criterion_cannot_reach_are_refused(factory, tenants):
    a, b, ids = tenants
    table = db.Model.__table__
    with db.tenant_session(factory, a) as s:
        for stmt in (select(table.c.id),  # Core: no ORM entity for the criterion to attach to
                     insert(db.Model).values(id="x", tenant=b, sha256="0", arch="a", spec={}, object_key="k",
                                             size_bytes=1),
                     select(db.Model).from_statement(text("SELECT * FROM models"))):
            with pytest.raises(db.TenantScopeError, match="bypass the tenant criterion"):
                s.execute(stmt)
        assert s.execute(text("SELECT 1")).scalar() == 1  # text() is not seen: it names no table the hook can read
    with factory() as s:  # neither a tenant's nor unscoped: fails closed on every tenant-owned table
        for stmt in (select(db.Model), select(db.ApiKey.id), select(func.count()).select_from(db.Webhook)):
            with pytest.raises(db.TenantScopeError, match="neither a tenant's nor unscoped"):
                s.execute(stmt)
        s.add(_model(a))
        with pytest.raises(db.TenantScopeError):
            s.flush()
        s.rollback()
        assert s.execute(text("SELECT 1")).scalar() == 1  # what health probes need


def test_every_table_with_a_tenant_column_is_tenant_owned_and_has_no_default():
    for mapper in db.Base.registry.mappers:
        columns = {c.key: c for c in inspect(mapper.class_).columns}
        if "tenant" in columns:
            assert issubclass(mapper.class_, db.TenantOwned), mapper.class_
            assert columns["tenant"].default is None and columns["tenant"].server_default is None, mapper.class_
            assert not columns["tenant"].nullable, mapper.class_
    assert {t.name for t in db.tenant_tables()} >= {"models", "datasets", "edits", "audits", "policies",
                                                    "audit_profiles", "aliases", "promotions", "idempotency_keys",
                                                    "webhooks", "webhook_deliveries", "api_keys"}
