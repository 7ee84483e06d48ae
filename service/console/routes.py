"""The console's routes: sign-in and sign-out (public, POST, checking the request's origin themselves) and read-only
pages (GET, `audits:read`). Each page is `op(..., console=True)`: the edge authenticates it from the Authorization
header or the console's cookie and sends a browser without either to the sign-in page; its session is the caller's
tenant's, so an id of another tenant is the same HTML 404 as an unknown one. Not part of the OpenAPI contract."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from editaudit.contracts.scopes import Scope, grants
from editaudit.contracts.statuses import Status
from editaudit.core import db, repo
from editaudit.service.console import auth, views
from editaudit.service.deps import PrincipalDep, SessionDep, SvcDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.routes.studies import get_study_report
from editaudit.service.services import reports
from editaudit.service.templating import render

router = APIRouter(prefix="/console", include_in_schema=False)
HTML = "text/html; charset=utf-8"


def page_op(name: str) -> dict:
    return op(name, Scope.audits_read, 404, console=True)


def nav(request: Request, section: str | None) -> dict[str, Any]:
    """The nav bar's context: the section shown, who is signed in (none on the sign-in page)."""
    caller = request.scope.get("state", {}).get("principal")
    return {"section": section, "tenant": caller.tenant if caller else None,
            "actor": caller.actor if caller else None, "signed_in": auth.COOKIE in request.cookies}


def html(request: Request, template: str, section: str | None, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("refresh", False)
    return HTMLResponse(render(f"console/{template}", console=nav(request, section), **context),
                        status_code=status, media_type=HTML)


# ------------------------------------------------------------------------------------------ sign-in, sign-out


def login_form(request: Request, target: str, status: int = 200, error: str | None = None) -> HTMLResponse:
    return html(request, "login.html.j2", None, status, next=target, error=error)


@router.get("/login", **op("console_login_form", None, public=True, console=True))
def login_page(request: Request, next_: str | None = Query(None, alias="next")):
    return login_form(request, auth.safe_next(next_))


@router.post("/login", **op("console_login", None, public=True, console=True))
def login(request: Request, svc: SvcDep, api_key: str = Form(""), next_: str | None = Form(None, alias="next")):
    """Checks the key as the edge would, then keeps it in the console's cookie and goes on to `next` (a console
    path only). The key is never echoed back, not even on a refusal."""
    target = auth.safe_next(next_)
    why = auth.cross_site(request)
    if why:  # login CSRF: another site signing the browser in with the attacker's key
        return login_form(request, target, 403, f"sign-in refused: the request came from another site ({why})")
    token = api_key.strip()
    caller = auth.principal_for_token(svc, token, "console sign-in: which tenant a key belongs to") if token else None
    if caller is None:
        return login_form(request, target, 401, "that API key is not valid: unknown, revoked or mistyped")
    if not grants(caller.scopes, Scope.audits_read):
        return login_form(request, target, 403, f"the key {caller.key_prefix or caller.actor!r} lacks the scope "
                                                 f"{Scope.audits_read.value!r}, which the console needs to read")
    response = RedirectResponse(target, status_code=303)
    auth.set_cookie(response, request, token)
    return response


@router.post("/logout", **op("console_logout", None, public=True, console=True))
def logout(request: Request):
    why = auth.cross_site(request)
    if why:
        return login_form(request, auth.HOME, 403, f"sign-out refused: the request came from another site ({why})")
    response = RedirectResponse(auth.LOGIN, status_code=303)
    auth.clear_cookie(response, request)
    return response


# ------------------------------------------------------------------------------------------------------ pages


@router.get("", **page_op("console_root"))
@router.get("/", **page_op("console_home"))
def home():
    return RedirectResponse("/console/edits", status_code=303)


@router.get("/edits", **page_op("console_edits"))
def edits(request: Request, s: SessionDep, cursor: str | None = None, status: Status | Literal[""] = "",
          method: str = Query("", max_length=64), model_id: str = Query("", max_length=32)):
    return html(request, "edits.html.j2", "edits", **views.edits_page(s, cursor, status, method, model_id))


@router.get("/edits/{edit_id}", **page_op("console_edit"))
def edit(request: Request, edit_id: str, s: SessionDep, caller: PrincipalDep):
    return html(request, "edit.html.j2", "edits",
                **views.edit_page(s, repo.get_or_404(s, db.Edit, edit_id), caller.scopes))


@router.get("/models", **page_op("console_models"))
def models(request: Request, s: SessionDep, cursor: str | None = None):
    return html(request, "models.html.j2", "models", **views.models_page(s, cursor))


@router.get("/models/{model_id}", **page_op("console_model"))
def model(request: Request, model_id: str, s: SessionDep):
    return html(request, "model.html.j2", "models", **views.model_page(s, repo.get_or_404(s, db.Model, model_id)))


@router.get("/audits/{audit_id}", **page_op("console_audit"))
def audit(request: Request, audit_id: str, s: SessionDep, svc: SvcDep, caller: PrincipalDep,
          policy: str = views.DEFAULT_POLICY):
    """The audit's HTML report (report/audit.html.j2) with the console's nav bar."""
    row = repo.get_or_404(s, db.Audit, audit_id)
    notice = None
    try:
        context = reports.audit_context(s, svc, row, policy, caller.scopes)
    except Problem as e:  # a mistyped policy in the page's box: the report without a verdict, and why
        if e.status != 404 or not any(err.get("field") == "policy" for err in e.errors):
            raise
        context, notice = reports.audit_context(s, svc, row, None, caller.scopes), e.detail
    page = {"section": None, "audit_id": row.id, "edit_id": row.edit_id, "policy": policy, "notice": notice}
    return HTMLResponse(render("console/audit.html.j2", **context, console={**nav(request, None), **page}),
                        media_type=HTML)


@router.get("/audits/{audit_id}/report.html", **page_op("console_audit_report"))
def audit_report(audit_id: str, s: SessionDep, svc: SvcDep, caller: PrincipalDep,
                 policy: str = views.DEFAULT_POLICY):
    """The standalone HTML report, as a download (GET /audits/{id}/report.html needs a bearer key)."""
    row = repo.get_or_404(s, db.Audit, audit_id)
    return Response(reports.audit_report(s, svc, row, "html", policy, caller.scopes), media_type=HTML,
                    headers={"Content-Disposition": f'attachment; filename="audit-{row.id}.html"'})


@router.get("/promotions", **page_op("console_promotions"))
def promotions(request: Request, s: SessionDep, page: int = Query(1, ge=1, le=100_000)):
    return html(request, "promotions.html.j2", "promotions", **views.promotions_page(s, page))


@router.get("/studies", **page_op("console_studies"))
def studies(request: Request, s: SessionDep, cursor: str | None = None):
    return html(request, "studies.html.j2", "studies", **views.studies_page(s, cursor))


@router.get("/studies/{study_id}", **page_op("console_study"))
def study(request: Request, study_id: str, s: SessionDep):
    return html(request, "study.html.j2", "studies", **views.study_page(s, repo.get_or_404(s, db.Study, study_id)))


@router.get("/studies/{study_id}/report.html", **page_op("console_study_report"))
def study_report(study_id: str, s: SessionDep):
    """The study's self-contained HTML report (plots inline), exactly as GET /studies/{id}/report.html serves it."""
    return get_study_report(study_id, "html", s)


@router.get("/{rest:path}", **page_op("console_not_found"))
def not_found(request: Request, rest: str):
    """Any other console path: the console's HTML 404 (after sign-in), not the API's problem+json; a page's path
    with a trailing slash redirects to the page (to a path under /console, never elsewhere)."""
    page = rest.rstrip("/")
    if page != rest and page and not page.startswith("/") and "//" not in page:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/console/{page}{query}", status_code=308)
    raise repo.NotFound(f"no console page /console/{rest}", "path")


def error_page(request: Request, status: int, title: str, detail: str, headers: dict | None = None) -> HTMLResponse:
    """An error of a console page as HTML (editaudit.service.errors renders every console error with it)."""
    response = html(request, "error.html.j2", None, status, code=status, title=title, detail=detail)
    response.headers.update(headers or {})
    return response
