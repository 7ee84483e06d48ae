"""What a request may name and what the server keeps beside the jobs: `editaudit archs`, `methods`, `policies
list|get|create`, `profiles list|get|create` (audit profiles), `aliases get`, `promotions list`, `health`."""

from __future__ import annotations

import fnmatch
import json
import sys

import click

from editaudit.cli.common import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    api_options,
    client,
    emit,
    handled,
    output_options,
    read_document,
    show_document,
)
from editaudit.cli.edits import idempotency_option
from editaudit.core.tables import render


def _yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)


# --- architectures and methods ----------------------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("pattern", required=False, metavar="[GLOB]")
@output_options(("table", "json"), what="the list")
@api_options
def archs(pattern, fmt, output, url, key):
    """The architectures a model spec's `arch` may name (one per line), e.g. `editaudit archs 'torchvision/res*'`.
    `timm/<name>` names any timm classifier as well."""
    with handled(url), client(url, key) as api:
        names = api.list_archs()["archs"]
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    show_document({"archs": names}, fmt, output, lambda: "\n".join(names))


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _type_of(schema: dict) -> str:
    if "enum" in schema:
        return "|".join(map(str, schema["enum"]))
    if "anyOf" in schema:
        return " or ".join(_type_of(s) for s in schema["anyOf"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    return str(schema.get("type") or schema.get("const") or "any")


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("method", required=False)
@output_options(("table", "json"), what="the list")
@api_options
def methods(method, fmt, output, url, key):
    """The edit methods with their traits; with METHOD, its hyperparams (type, default, meaning).

    \b
    Examples:
      editaudit methods
      editaudit methods rewrite
    """
    with handled(url), client(url, key) as api:
        found = api.list_methods()["methods"]
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


@policies.command("list", epilog=EXIT_CODES_HELP)
@output_options(("table", "json"), what="the list")
@api_options
def policies_list(fmt, output, url, key):
    """The tenant's policy names and the built-in ones."""
    with handled(url), client(url, key) as api:
        out = api.list_policies()
    show_document(out, fmt, output, lambda: render(
        ["policy", "kind"], [[n, "built-in"] for n in out["builtin"]] + [[n, f"tenant {out['tenant']}"]
                                                                        for n in out["policies"]], align_right=set()))


@policies.command("get", epilog="Exit codes: 0 ok, 2 error, 4 no such policy (usage).")
@click.argument("name")
@output_options(("table", "json"), what="the policy")
@api_options
def policies_get(name, fmt, output, url, key):
    """A policy's latest version, as YAML a policy file may hold (--json: the API's answer, with its version).

    \b
    Example:
      editaudit policies get default -o policy.yaml    # start a policy file from the shipped one
    """
    with handled(url), client(url, key) as api:
        out = api.get_policy(name)
    if fmt == "json":
        show_document(out, fmt, output, str)
        return
    head = f"# policy {out['name']}, version {out['version']}" + (f", tenant {out['tenant']}" if out.get("tenant")
                                                                   else "") + "\n"
    emit(head + _yaml(out["policy"]), output, "yaml" if output else None)


@policies.command("create", epilog="Exit codes: 0 created, 2 error (the key lacks the admin scope, a policy that "
                                   "does not validate), 4 usage (an unreadable file, a built-in policy's name).")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@idempotency_option
@output_options(("table", "json"), what="the stored policy")
@api_options
def policies_create(name, file, idempotency_key, fmt, output, url, key):
    """Store FILE (YAML or JSON, as `gate --policy FILE` reads it) as a new version of the server policy NAME (an
    admin key), so `promote --policy NAME` can use it.

    \b
    Example:
      editaudit policies create release policy.yaml
      editaudit promote "$EDIT" --policy release
    """
    doc = read_document(file, "FILE")
    if not isinstance(doc, dict):
        raise click.UsageError("FILE must hold a policy document (a mapping with `rules`)")
    with handled(url), client(url, key) as api:
        out = api.create_policy(name, doc, idempotency_key=idempotency_key)
    show_document(out, fmt, output, lambda: f"policy {out['name']} version {out['version']} stored "
                                            f"({len(out['policy'].get('rules') or [])} rules)")


@click.group()
def profiles():
    """Audit profiles: named, versioned audit configs an edit request runs with `"audit": {"profile": NAME}`."""


@profiles.command("list", epilog=EXIT_CODES_HELP)
@output_options(("table", "json"), what="the list")
@api_options
def profiles_list(fmt, output, url, key):
    """The tenant's audit profile names."""
    with handled(url), client(url, key) as api:
        out = api.list_audit_profiles()
    show_document(out, fmt, output, lambda: "\n".join(out["profiles"]) if out["profiles"] else
                  f"(tenant {out['tenant']} has no audit profiles)")


@profiles.command("get", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(1), default=None, help="A given version (default: latest).")
@output_options(("table", "json"), what="the profile")
@api_options
def profiles_get(name, version, fmt, output, url, key):
    """An audit profile's config (defaults included), as YAML."""
    with handled(url), client(url, key) as api:
        out = api.get_audit_profile(name, version=version)
    if fmt == "json":
        show_document(out, fmt, output, str)
        return
    emit(f"# audit profile {out['name']}, version {out['version']}\n" + _yaml(out["audit"]), output,
         "yaml" if output else None)


@profiles.command("create", epilog="Exit codes: 0 created, 2 error (the key lacks the admin scope, an audit config "
                                   "that does not validate), 4 usage.")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@idempotency_option
@output_options(("table", "json"), what="the stored profile")
@api_options
def profiles_create(name, file, idempotency_key, fmt, output, url, key):
    """Store FILE (the `audit` section of an edit request, YAML or JSON) as a new version of audit profile NAME."""
    doc = read_document(file, "FILE")
    if not isinstance(doc, dict):
        raise click.UsageError("FILE must hold an audit config (a mapping)")
    with handled(url), client(url, key) as api:
        out = api.create_audit_profile(name, doc, idempotency_key=idempotency_key)
    show_document(out, fmt, output, lambda: f"audit profile {out['name']} version {out['version']} stored")


# --- aliases and promotions -------------------------------------------------------------------------------------------


@click.group()
def aliases():
    """Aliases of a model family (production, staging, ...) and their history."""


@aliases.command("get", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.option("--family", default=None, metavar="ROOT_MODEL_ID",
              help="The model family (its root model's id), when NAME exists in several.")
@output_options(("table", "json"), what="the alias")
@api_options
def aliases_get(name, family, fmt, output, url, key):
    """The model ALIAS serves now, and every move of it (promotions, overrides, refusals, reverts), newest first."""
    with handled(url), client(url, key) as api:
        out = api.get_alias(name, family=family)
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
@output_options(("table", "json"), what="the list")
@api_options
def promotions_list(edit_id, fmt, output, url, key):
    """Every promotion, override, refusal and revert, newest first."""
    with handled(url), client(url, key) as api:
        out = api.list_promotions(edit_id=edit_id)
    show_document(out, fmt, output, lambda: render(
        ["at", "alias", "outcome", "edit", "model", "verdict", "actor", "reason"],
        [[p["at"][:19], p["alias"], p["outcome"], p["edit_id"], p.get("model_id") or "-", p["verdict"],
          p.get("actor") or "-", p.get("override_reason") or "-"] for p in out["promotions"]], align_right=set()))


# --- health -----------------------------------------------------------------------------------------------------------


@click.command(epilog="Exit codes: 0 ready, 2 not ready or unreachable (what is not ready is listed).")
@output_options(("table", "json"), what="the checks")
@api_options
def health(fmt, output, url, key):
    """Whether the server answers (/healthz) and every dependency is ready (/readyz): database, broker, store,
    workers."""
    with handled(url), client(url, key) as api:
        live = api.healthz()
        ready = api.readyz()
    out = {"url": url, "health": live, "ready": ready}

    def table() -> str:
        worker = live.get("worker")
        rows = [["api", live.get("status")]] + [[k, v] for k, v in (ready.get("checks") or {}).items()]
        if worker:
            rows.append(["local worker", f"{'alive' if worker.get('alive') else 'down'}, {worker.get('restarts')} "
                                         "restarts"])
        return f"{url}: {ready.get('status')}\n\n" + render(["check", "state"], rows, align_right=set())

    show_document(out, fmt, output, table)
    if ready.get("status") not in ("ok", "ready"):
        sys.exit(EXIT_ERROR)
