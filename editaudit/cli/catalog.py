"""What a request may name and what the server keeps beside the jobs: `editaudit archs`, `methods`, `policies
list|get|create`, `profiles list|get|create` (audit profiles), `aliases get`, `promotions list`, `health`."""

from __future__ import annotations

import fnmatch
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from editaudit.cli.common import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    document_command,
    document_options,
    emit,
    fetch,
    read_document,
    show_document,
)
from editaudit.cli.edits import idempotency_option
from editaudit.client import Client
from editaudit.core.tables import render

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)


def _show_yaml(answer: Mapping[str, Any], fmt: str, output: str | None, head: str, document: Any) -> None:
    """--json: the API's answer; else a `# head` comment and the document as YAML that a file may hold."""
    if fmt == "json":
        show_document(answer, fmt, output, str)
    else:
        emit(f"# {head}\n" + _yaml(document), output, "yaml" if output else None)


def _store_options(what: str) -> Callable[[F], F]:
    """NAME, FILE (YAML or JSON), --idempotency-key, and the options of a command that shows `what`."""
    def decorate(fn: F) -> F:
        fn = idempotency_option(document_options(what)(fn))
        return click.argument("name")(click.argument("file", type=click.Path(exists=True, dir_okay=False))(fn))
    return decorate


def _store(file: str, what: str, url: str, key: str | None, create: Callable[[Client, dict[str, Any]], T]) -> T:
    """Send FILE (YAML or JSON, a mapping) to the server with `create`; anything else is a usage error."""
    doc = read_document(file, "FILE")
    if not isinstance(doc, dict):
        raise click.UsageError(f"FILE must hold {what}")
    return fetch(url, key, lambda api: create(api, doc))


# --- architectures and methods ----------------------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("pattern", required=False, metavar="[GLOB]")
@document_options("the list")
def archs(pattern, fmt, output, url, key):
    """The architectures a model spec's `arch` may name (one per line), e.g. `editaudit archs 'torchvision/res*'`,
    then (without a GLOB) the families a worker checks: `timm/<name>` (any timm classifier) and `hf/<model_type>` (a
    Hugging Face config.json; see `editaudit models import`)."""
    out = fetch(url, key, lambda api: api.list_archs())
    names = out["archs"]
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    families = {} if pattern else out.get("families") or {}
    show_document({"archs": names, "families": families}, fmt, output, lambda: "\n".join(
        names + [f"{prefix}*  {about}" for prefix, about in families.items()]))


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _type_of(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(map(str, schema["enum"]))
    if "anyOf" in schema:
        return " or ".join(_type_of(s) for s in schema["anyOf"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    return str(schema.get("type") or schema.get("const") or "any")


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("method", required=False)
@document_options("the list")
def methods(method, fmt, output, url, key):
    """The edit methods with their traits; with METHOD, its hyperparams (type, default, meaning).

    \b
    Examples:
      editaudit methods
      editaudit methods rewrite
    """
    found = fetch(url, key, lambda api: api.list_methods())["methods"]
    if method:
        match = [m for m in found if m["method"] == method]
        if not match:
            import difflib

            from editaudit.cli.common import suggestions

            names = [m["method"] for m in found]
            hint = suggestions(difflib.get_close_matches(method, names, 3, 0.5), names)
            raise click.UsageError(f"no edit method {method!r}{hint}")
        m = match[0]

        def table() -> str:
            props = (m.get("params_schema") or {}).get("properties") or {}
            rows = [[name, _type_of(p), json.dumps(p["default"]) if "default" in p else "(required)",
                     _cut((p.get("description") or "").split("\n")[0], 100)] for name, p in props.items()]
            traits = ", ".join(f"{k}={v}" for k, v in (m.get("traits") or {}).items() if v not in (None, [], {}, ""))
            return f"{m['method']}: {traits}\n\n" + render(["hyperparam", "type", "default", "meaning"], rows,
                                                            align_right=set())

        show_document(m, fmt, output, table)
        return
    show_document({"methods": found}, fmt, output, lambda: render(
        ["method", "layers", "single layer", "ranked", "needs x_orig", "datasets"],
        [[m["method"], m["traits"].get("layers"), "yes" if m["traits"].get("single_layer") else "-",
          "yes" if m["traits"].get("ranked") else "-", "yes" if m["traits"].get("needs_x_orig") else "-",
          ", ".join(sorted(m["traits"].get("dataset_fields") or {})) or "-"] for m in found], align_right=set()))


# --- policies and audit profiles --------------------------------------------------------------------------------------


@click.group()
def policies():
    """Gate policies stored on the server (versioned per name; `default` is built in)."""


policies_list = document_command(
    policies, "list", Client.list_policies, lambda out: render(
        ["policy", "kind"], [[n, "built-in"] for n in out["builtin"]] + [[n, f"tenant {out['tenant']}"]
                                                                        for n in out["policies"]], align_right=set()),
    "The tenant's policy names and the built-in ones.", what="the list")


@policies.command("get", epilog="Exit codes: 0 ok, 2 error, 4 no such policy (usage).")
@click.argument("name")
@document_options("the policy")
def policies_get(name, fmt, output, url, key):
    """A policy's latest version, as YAML a policy file may hold (--json: the API's answer, with its version).

    \b
    Example:
      editaudit policies get default -o policy.yaml    # start a policy file from the shipped one
    """
    out = fetch(url, key, lambda api: api.get_policy(name))
    _show_yaml(out, fmt, output, f"policy {out['name']}, version {out['version']}"
               + (f", tenant {out['tenant']}" if out.get("tenant") else ""), out["policy"])


@policies.command("create", epilog="Exit codes: 0 created, 2 error (the key lacks the admin scope, a policy that "
                                   "does not validate), 4 usage (an unreadable file, a built-in policy's name).")
@_store_options("the stored policy")
def policies_create(name, file, idempotency_key, fmt, output, url, key):
    """Store FILE (YAML or JSON, as `gate --policy FILE` reads it) as a new version of the server policy NAME (an
    admin key), so `promote --policy NAME` can use it.

    \b
    Example:
      editaudit policies create release policy.yaml
      editaudit promote "$EDIT" --policy release
    """
    out = _store(file, "a policy document (a mapping with `rules`)", url, key,
                 lambda api, doc: api.create_policy(name, doc, idempotency_key=idempotency_key))
    show_document(out, fmt, output, lambda: f"policy {out['name']} version {out['version']} stored "
                                            f"({len(out['policy'].get('rules') or [])} rules)")


@click.group()
def profiles():
    """Audit profiles: named, versioned audit configs an edit request runs with `"audit": {"profile": NAME}`."""


profiles_list = document_command(
    profiles, "list", Client.list_audit_profiles,
    lambda out: "\n".join(out["profiles"]) if out["profiles"] else f"(tenant {out['tenant']} has no audit profiles)",
    "The tenant's audit profile names.", what="the list")


@profiles.command("get", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(1), default=None, help="A given version (default: latest).")
@document_options("the profile")
def profiles_get(name, version, fmt, output, url, key):
    """An audit profile's config (defaults included), as YAML."""
    out = fetch(url, key, lambda api: api.get_audit_profile(name, version=version))
    _show_yaml(out, fmt, output, f"audit profile {out['name']}, version {out['version']}", out["audit"])


@profiles.command("create", epilog="Exit codes: 0 created, 2 error (the key lacks the admin scope, an audit config "
                                   "that does not validate), 4 usage.")
@_store_options("the stored profile")
def profiles_create(name, file, idempotency_key, fmt, output, url, key):
    """Store FILE (the `audit` section of an edit request, YAML or JSON) as a new version of audit profile NAME."""
    out = _store(file, "an audit config (a mapping)", url, key,
                 lambda api, doc: api.create_audit_profile(name, doc, idempotency_key=idempotency_key))
    show_document(out, fmt, output, lambda: f"audit profile {out['name']} version {out['version']} stored")


# --- aliases and promotions -------------------------------------------------------------------------------------------


@click.group()
def aliases():
    """Aliases of a model family (production, staging, ...) and their history."""


@aliases.command("get", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.option("--family", default=None, metavar="ROOT_MODEL_ID",
              help="The model family (its root model's id), when NAME exists in several.")
@document_options("the alias")
def aliases_get(name, family, fmt, output, url, key):
    """The model ALIAS serves now, and every move of it (promotions, overrides, refusals, reverts), newest first."""
    out = fetch(url, key, lambda api: api.get_alias(name, family=family))
    show_document(out, fmt, output, lambda: (
        f"{out['name']} -> model {out['model_id']} (family {out['family']}, since {out['updated_at'][:19]})\n\n"
        + render(["at", "outcome", "edit", "model", "previous", "verdict", "actor", "reason"],
                 [[h["at"][:19], h["outcome"], h["edit_id"], h.get("model_id") or "-",
                   h.get("previous_model_id") or "-", h["verdict"], h.get("actor") or "-",
                   h.get("override_reason") or "-"] for h in out["history"]],
                 align_right=set())))


@click.group()
def promotions():
    """The audit trail of alias moves."""


@promotions.command("list", epilog=EXIT_CODES_HELP)
@click.option("--edit-id", default=None, help="Only the moves of this edit.")
@document_options("the list")
def promotions_list(edit_id, fmt, output, url, key):
    """Every promotion, override, refusal and revert, newest first."""
    out = fetch(url, key, lambda api: api.list_promotions(edit_id=edit_id))
    show_document(out, fmt, output, lambda: render(
        ["at", "alias", "outcome", "edit", "model", "verdict", "actor", "reason"],
        [[p["at"][:19], p["alias"], p["outcome"], p["edit_id"], p.get("model_id") or "-", p["verdict"],
          p.get("actor") or "-", p.get("override_reason") or "-"] for p in out["promotions"]], align_right=set()))


# --- health -----------------------------------------------------------------------------------------------------------


@click.command(epilog="Exit codes: 0 ready, 2 not ready or unreachable (what is not ready is listed).")
@document_options("the checks")
def health(fmt, output, url, key):
    """Whether the server answers (/healthz) and every dependency is ready (/readyz): database, broker, store;
    and each worker's heartbeat (a stale one is a warning, not a failure)."""
    live, ready = fetch(url, key, lambda api: (api.healthz(), api.readyz()))
    out = {"url": url, "health": live, "ready": ready}

    def table() -> str:
        worker = live.get("worker")
        rows = [["api", live.get("status")]] + [[k, v] for k, v in (ready.get("checks") or {}).items()]
        if worker:
            rows.append(["local worker", f"{'alive' if worker.get('alive') else 'down'}, {worker.get('restarts')} "
                                         "restarts"])
        rows += [[f"worker {name}", f"beat {beat.get('age_s')} s ago" + ("" if beat.get("fresh") else " (stale)")]
                 for name, beat in (ready.get("workers") or {}).items()]
        warnings = "".join(f"\nwarning: {w}" for w in ready.get("warnings") or [])
        return f"{url}: {ready.get('status')}{warnings}\n\n" + render(["check", "state"], rows, align_right=set())

    show_document(out, fmt, output, table)
    if ready.get("status") not in ("ok", "ready"):
        sys.exit(EXIT_ERROR)
