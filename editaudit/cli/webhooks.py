"""`editaudit webhooks list|get|create|delete|test|deliveries`: where the tenant's edit, audit and gate events are
sent (every route needs an admin key)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from itertools import islice
from typing import Any

import click

from editaudit.cli.common import (
    EXIT_CODES_HELP,
    api_options,
    document_command,
    document_options,
    fetch,
    key_value_table,
    limit_option,
    list_command,
    render_rows,
    show_document,
)
from editaudit.cli.edits import idempotency_option
from editaudit.client import Client
from editaudit.client.api import pages

EVENTS = ("edit.succeeded", "edit.failed", "edit.canceled", "audit.completed", "gate.evaluated", "*")
DELIVERY_STATES = ("pending", "delivering", "succeeded", "failed")


@click.group()
def webhooks():
    """Webhooks: the tenant's events sent to a URL, signed (Standard Webhooks); an admin key."""


def webhook_table(h: Mapping[str, Any]) -> str:
    rows = [("id", h["id"]), ("url", h["url"]), ("events", ", ".join(h["events"])),
            ("description", h.get("description")), ("created", h["created_at"])]
    if h.get("secret"):
        rows.append(("secret", h["secret"]))
    return key_value_table(rows)


@webhooks.command("create", epilog="Exit codes: 0 created, 2 error (a host the operator does not allow, a key "
                                   "without the admin scope, too many webhooks), 4 usage.")
@click.argument("target")
@click.option("--event", "events", multiple=True, type=click.Choice(EVENTS), metavar="EVENT",
              help=f"Repeat for several: {', '.join(EVENTS)} (default: *, every event).")
@click.option("--description", default=None, help="What it is for.")
@idempotency_option
@document_options("the webhook", quiet=True)
def create(target, events, description, idempotency_key, fmt, output, quiet, url, key):
    """Send the tenant's events to TARGET (an https URL whose host the operator allows). The signing secret is
    shown only now: keep it to verify each delivery's webhook-signature header.

    \b
    Example:
      editaudit webhooks create https://ci.example.com/hooks/editaudit --event gate.evaluated
    """
    hook = fetch(url, key, lambda api: api.create_webhook(target, events or ("*",), description=description,
                                                          idempotency_key=idempotency_key))
    if not quiet and fmt == "table":
        click.echo("warning: the secret below is shown only now; store it where the receiver can read it", err=True)
    show_document(hook, fmt, output, lambda: webhook_table(hook), hook["id"] if quiet else None)


list_ = list_command(
    webhooks, lambda api, page_size, **kw: pages(api.list_webhooks, page_size, **kw),
    ["id", "url", "events", "description", "created"],
    lambda h: [h["id"], h["url"], ",".join(h["events"]), h.get("description") or "-", h["created_at"][:19]],
    "The tenant's webhooks, newest first (never their secrets).")
get = document_command(webhooks, "get", Client.get_webhook, webhook_table, "A webhook: its URL, events, description.",
                       argument="webhook_id", what="the webhook")


@webhooks.command("delete", epilog=EXIT_CODES_HELP)
@click.argument("webhook_id")
@api_options
def delete(webhook_id, url, key):
    """Stop sending to a webhook; its pending deliveries end failed."""
    fetch(url, key, lambda api: api.delete_webhook(webhook_id))
    click.echo(f"deleted webhook {webhook_id}")


test = document_command(
    webhooks, "test", Client.test_webhook, lambda d: f"delivery {d['id']} of {d['event']} {d['status']}",
    "Queue a `ping` event to the webhook (a worker sends it; `webhooks deliveries` shows how it went).",
    argument="webhook_id", what="the delivery")


@webhooks.command("deliveries", epilog=EXIT_CODES_HELP)
@click.argument("webhook_id")
@click.option("--status", type=click.Choice(DELIVERY_STATES), default=None)
@limit_option
@document_options("the list")
def deliveries(webhook_id, status, limit, fmt, output, url, key):
    """What was sent to a webhook, newest first, with the last attempt's outcome."""
    rows = fetch(url, key, lambda api: list(islice(pages(
        functools.partial(api.list_webhook_deliveries, webhook_id), min(limit, 100), status=status), limit)))
    show_document(rows, fmt, output, lambda: render_rows(
        ["id", "event", "status", "attempts", "last answer", "created", "delivered"],
        [[d["id"], d["event"], d["status"], d["attempts"],
          d.get("last_status_code") or d.get("last_error") or "-", d["created_at"][:19],
          (d.get("delivered_at") or "-")[:19]] for d in rows], {3}))
