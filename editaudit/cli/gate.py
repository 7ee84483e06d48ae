"""`editaudit gate|promote|revert`: the deployment gate and the alias moves it guards. Needs only the base install
(click, httpx, pydantic, pyyaml): this is what CI runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from editaudit.cli.common import (
    EXIT_BLOCKED,
    EXIT_ERROR,
    EXIT_PASS,
    api_options,
    client,
    emit,
    handled,
    output_options,
    problem_lines,
)
from editaudit.cli.progress import every_option
from editaudit.client import ApiError, Client
from editaudit.contracts.statuses import Status

GATE_EXIT = ("Exit codes: 0 pass (warnings allowed), 1 blocked, 2 error, 3 audit missing or not finished, 4 usage "
             "(bad rules, an unknown policy, a metric or attack id that cannot exist: the closest names are shown).")


def _is_path(policy: str) -> bool:
    """A policy file is written as a path (`./p.yaml`, `ci/policy.json`); a bare name is always the server's, so a
    file named `default` in the working directory cannot stand in for the server's default policy."""
    if not ("/" in policy or policy.endswith((".yaml", ".yml", ".json"))):
        return False
    if not Path(policy).is_file():
        raise click.UsageError(f"--policy {policy!r}: no such policy file")
    return True


def _rules_policy(policy: str | None, rules: list, api: Client) -> str | dict:
    """What to send as `policy`: a name, or an inline document (a file, ad-hoc rules, or a name plus rules)."""
    from editaudit.gate.policy import Policy, load_policy

    doc: dict | None = None
    if policy and _is_path(policy):
        doc = load_policy(Path(policy)).model_dump(mode="json", exclude_none=True)
    elif policy and not rules:
        return policy
    elif policy:
        doc = api.get_policy(policy)["policy"]
    doc = doc or {"version": 1, "name": "command line", "rules": []}
    doc["rules"] = list(doc["rules"]) + [r.model_dump(mode="json", exclude_none=True) for r in rules]
    return Policy.model_validate(doc).model_dump(mode="json", exclude_none=True)


def render_gate(result: Mapping[str, Any], fmt: str, edit_id: str, api: Client | None = None) -> str:
    """The gate's result in `fmt`; html, given the client, also shows what changed (the audit the gate read) and
    links the audit's full report."""
    from editaudit.gate.evaluate import GateResult
    from editaudit.gate.render import as_html, as_junit, as_markdown, as_table

    if fmt == "json":
        return json.dumps(result, indent=2, default=str) + "\n"
    if fmt == "table":
        return as_table(result)
    gr = GateResult.from_dict(result)
    title = f"editaudit gate: edit {edit_id}"
    return {"junit": lambda: as_junit(gr), "markdown": lambda: as_markdown(gr, title),
            "html": lambda: as_html(gr, title, *_report_of(result, api))}[fmt]()


def _report_of(result: Mapping[str, Any], api: Client | None) -> tuple[str | None, Mapping[str, Any] | None]:
    """(the audit report's URL under the gate's policy, the audit the gate read), each None where it cannot be
    given: no client; an inline policy (the server's report can only name a server policy, and would show another
    verdict); a key without audits:read (a CI key may hold gate:read alone: the verdict still renders)."""
    if api is None:
        return None, None
    from urllib.parse import quote

    name = (result.get("policy") or {}).get("name")
    link = f"{api.url}/audits/{result['audit_id']}/report.html?policy={quote(name)}" if name else None
    try:
        return link, dict(api.get_audit(result["audit_id"]))
    except ApiError:
        return link, None


@click.command("gate", epilog=GATE_EXIT)
@click.argument("edit_id")
@click.option("--policy", default=None, metavar="FILE|NAME",
              help="A policy file written as a path (./p.yaml, ci/p.json) or the name of a server policy "
                   "('default' ships with editaudit).")
@click.option("--min", "mins", multiple=True, metavar="METRIC=V", help="Block unless candidate >= V.")
@click.option("--max", "maxs", multiple=True, metavar="METRIC=V", help="Block unless candidate <= V.")
@click.option("--max-drop", "drops", multiple=True, metavar="METRIC=V",
              help="Pass only if the audit shows baseline - candidate <= V (absolute; 0.01 = one point): the 95% "
                   "upper bound on the paired drop must be within V (non-inferiority).")
@click.option("--max-relative-drop", "rel_drops", multiple=True, metavar="METRIC=V",
              help="Likewise for (baseline - candidate) / baseline <= V.")
@click.option("--wait", is_flag=True, help="Wait for a queued or running audit to finish, with progress on stderr.")
@click.option("--timeout", default=3600.0, show_default=True, type=click.FloatRange(0), metavar="SECONDS",
              help="Seconds --wait waits at most (then exit 3).")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05), metavar="SECONDS",
              help="Seconds between polls while waiting.")
@every_option
@output_options(("table", "json", "markdown", "junit", "html"),
                what="the result", note="With a FILE, the table still goes to stdout (the CI log).")
@api_options
def gate_command(edit_id, policy, mins, maxs, drops, rel_drops, wait, timeout, poll, progress_every, fmt, output, url,
                 key):
    """Decide whether EDIT_ID may ship.

    A metric that a rule names and the audit lacks blocks (fail-closed); so does a drop the audit has too few
    samples to bound (the row says how many would). A metric name that cannot exist, or an attack id the audit
    never ran, is a usage error with the closest valid names.

    \b
    Examples:
      editaudit gate "$EDIT" --policy default --wait -o gate-junit.xml     # CI: JUnit file, table in the log
      editaudit gate "$EDIT" --policy ./policy.yaml --format md >> "$GITHUB_STEP_SUMMARY"
      editaudit gate "$EDIT" --max-drop test.accuracy=0.01 --min edit.accuracy=0.9
    """
    from editaudit.gate.policy import parse_assignment

    try:
        rules = [parse_assignment(v, kind) for kind, values in
                 (("min", mins), ("max", maxs), ("max_drop", drops), ("max_relative_drop", rel_drops)) for v in values]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if not policy and not rules:
        raise click.UsageError("no rules: give --policy FILE|NAME or at least one --min/--max/--max-drop")
    with handled(url), client(url, key) as api:
        try:
            policy_ref = _rules_policy(policy, rules, api)
        except ValueError as e:  # a policy file or rules that do not validate
            raise click.UsageError(str(e)) from None
        if wait:
            _wait(api, edit_id, timeout, poll, progress_every)
        result = api.gate(edit_id, policy_ref)
        rendered = render_gate(result, fmt, edit_id, api)
    emit(rendered, output, fmt)
    if output is not None:  # the log still shows the verdict
        click.echo(render_gate(result, "table", edit_id))
    sys.exit({"pass": EXIT_PASS, "warn": EXIT_PASS, "fail": EXIT_BLOCKED}.get(result["verdict"], EXIT_ERROR))


def _wait(api: Client, edit_id: str, timeout: float, poll: float, every: float) -> None:
    from editaudit.cli.edits import wait_for

    edit = wait_for(api, edit_id, timeout, poll, every)
    if edit["status"] != Status.succeeded:
        raise ApiError(409, {"detail": f"edit {edit_id} {edit['status']}: {edit.get('error')}", "errors": [
            {"field": "edit_id", "reason": edit["status"]}]})


def explain_refusal(e: ApiError) -> str:
    """A refused promotion, real reason first: the alias moved since the edit's model was read (its audit compares
    against a model the alias no longer serves), and/or the gate's failing rules (a table of those rules only)."""
    import re

    from editaudit.gate.render import as_table

    gate = e.body["gate"]
    rules = gate.get("rules") or []
    failing = [r for r in rules if r.get("outcome") == "fail"]
    notes = [str(n) for n in gate.get("notes") or []]
    moved = [n for n in notes if "audited against" in n]
    edit_id = gate.get("edit_id") or "?"
    policy = (gate.get("policy") or {}).get("name") or "inline"
    alias = _quoted_alias(e.detail)
    target = f" to{alias}" if alias else ""
    lines = []
    if moved or "audited against" in e.detail:
        text = moved[0] if moved else e.detail
        m = re.search(r"audited against model (\S+), but '([^']+)' serves (\S+?):", text)
        if m:
            audited, name, serves = m.groups()
            lines += [f"error: the alias '{name}' moved since edit {edit_id} was made: it serves model {serves}, the "
                      f"edit was audited against model {audited}; not promoted",
                      f"  edit model {serves} instead (its audit then compares against what '{name}' serves), or "
                      "give --override-reason"]
        else:
            lines.append(f"error: the alias moved since edit {edit_id} was made; not promoted{target}: {text}")
        if failing:
            lines.append(f"also, the gate fails: {_rules_block(len(failing))} (policy {policy})")
    elif failing:
        lines.append(f"error: gate failed: {_rules_block(len(failing))} (policy {policy}); edit {edit_id} not "
                     f"promoted{target}")
    else:
        lines.append(f"error: not promoted{target}: {e.detail}")
    if failing:
        lines += ["", as_table({**gate, "rules": failing, "notes": [n for n in notes if n not in moved]})]
        others = len(rules) - len(failing)
        if others:
            lines.append(f"({others} other rule{'s' if others != 1 else ''} passed or warned: `editaudit gate "
                         f"{edit_id} --policy {policy if policy != 'inline' else 'NAME'}` shows every rule)")
        lines.append("--override-reason TEXT (an admin key) ships it anyway; the override is recorded")
    for line in problem_lines(e)[1:]:  # any field the server named beyond the refusal itself
        if "edit_id" not in line:
            lines.append(line)
    return "\n".join(lines)


def _rules_block(n: int) -> str:
    return f"{n} rule{'s' if n != 1 else ''} block{'s' if n == 1 else ''}"


def _quoted_alias(detail: str) -> str:
    """` 'production'` from the server's "not promoted to 'production'"; '' when it is not there."""
    marker = "promoted to '"
    if marker not in detail:
        return ""
    rest = detail.split(marker, 1)[1]
    return f" '{rest.split(chr(39), 1)[0]}'"


@click.command(epilog="Exit codes: 0 promoted, 1 refused (the gate fails, or the alias moved since the edit was "
                      "made), 2 error, 3 edit unknown or its audit not finished, 4 usage (an unknown policy).")
@click.argument("edit_id")
@click.option("--alias", default="production", show_default=True, help="Alias of the model family to move.")
@click.option("--policy", default="default", show_default=True, metavar="NAME",
              help="Server policy to gate with (`editaudit policies list`).")
@click.option("--override-reason", default=None,
              help="Promote despite a failing gate (needs an admin key); recorded in the audit trail.")
@output_options(("table", "json"), what="the promotion")
@api_options
def promote(edit_id, alias, policy, override_reason, fmt, output, url, key):
    """Point ALIAS of the model family at EDIT_ID's model, only if the gate passes (or with --override-reason).

    A refusal says why first: the alias moved since the edit was made (its audit compared against a model the
    alias no longer serves: edit that model instead), or the gate's failing rules. The actor recorded is the name
    of the API key.
    """
    with handled(url), client(url, key) as api:
        out = api.promote_edit(edit_id, alias=alias, policy=policy, override_reason=override_reason)
    emit(json.dumps(out, indent=2, default=str) + "\n" if fmt == "json" else
         f"{out['outcome']}: {alias} -> model {out['model_id']} (was {out['previous_model_id'] or 'unset'}); "
         f"gate {out['gate']['verdict']}", output, fmt if output else None)


@click.command(epilog="Exit codes: 0 reverted (or nothing pointed at it), 2 error, 3 edit unknown or not finished.")
@click.argument("edit_id")
@click.option("--reason", default=None, help="Why (recorded in the alias history).")
@output_options(("table", "json"), what="the result")
@api_options
def revert(edit_id, reason, fmt, output, url, key):
    """Undo EDIT_ID: every alias pointing at its edited model goes back to what it held before EDIT_ID was
    promoted (the model EDIT_ID was applied to, when there is no record)."""
    with handled(url), client(url, key) as api:
        out = api.revert_edit(edit_id, reason=reason)
    moved = ", ".join(f"{a} -> {m}" for a, m in out["alias_targets"].items()) or "no alias pointed at it"
    emit(json.dumps(out, indent=2, default=str) + "\n" if fmt == "json" else
         f"reverted edit {edit_id} (model {out['reverted_model_id']}, parent {out['model_id']}): {moved}", output,
         fmt if output else None)
