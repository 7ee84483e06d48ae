"""`editaudit webhooks list|get|create|delete|test|deliveries`: where the tenant's edit, audit and gate events are
sent (every route needs an admin key)."""

from __future__ import annotations

from itertools import islice

import click

from editaudit.cli.common import (
    EXIT_CODES_HELP,
    api_options,
    client,
    handled,
    key_value_table,
    output_options,
    quiet_option,
    show_document,
)
from editaudit.cli.edits import idempotency_option
from editaudit.core.tables import render

EVENTS = ("edit.succeeded", "edit.failed", "edit.canceled", "audit.completed", "gate.evaluated", "*")
DELIVERY_STATES = ("pending", "delivering", "succeeded", "failed")


@click.group()
def webhooks():
    """Webhooks: the tenant's events sent to a URL, signed (Standard Webhooks); an admin key."""


def webhook_table(h: dict) -> str:
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
@output_options(("table", "json"), what="the webhook")
@quiet_option
@api_options
def create(target, events, description, idempotency_key, fmt, output, quiet, url, key):
    """Send the tenant's events to TARGET (an https URL whose host the operator allows). The signing secret is
    shown only now: keep it to verify each delivery's webhook-signature header.

    \b
    Example:
      editaudit webhooks create https://ci.example.com/hooks/editaudit --event gate.evaluated
    """
    with handled(url), client(url, key) as api:
        hook = api.create_webhook(target, events or ("*",), description=description, idempotency_key=idempotency_key)
    if not quiet and fmt == "table":
        click.echo("warning: the secret below is shown only now; store it where the receiver can read it", err=True)
    show_document(hook, fmt, output, lambda: webhook_table(hook), hook["id"] if quiet else None)


@webhooks.command("list", epilog=EXIT_CODES_HELP)
@click.option("--created-after", default=None, metavar="ISO-TIME", help="Only those created after this time.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="At most this many, newest first.")
@output_options(("table", "json"), what="the list")
@quiet_option
@api_options
def list_(created_after, limit, fmt, output, quiet, url, key):
    """The tenant's webhooks, newest first (never their secrets)."""
    with handled(url), client(url, key) as api:
        rows = list(islice(_pages(api.list_webhooks, min(limit, 100), created_after=created_after), limit))
    show_document(rows, fmt, output, lambda: render(
        ["id", "url", "events", "description", "created"],
        [[h["id"], h["url"], ",".join(h["events"]), h.get("description") or "-", h["created_at"][:19]]
         for h in rows], align_right=set()), "\n".join(h["id"] for h in rows) if quiet else None)


@webhooks.command("get", epilog=EXIT_CODES_HELP)
@click.argument("webhook_id")
@output_options(("table", "json"), what="the webhook")
@api_options
def get(webhook_id, fmt, output, url, key):
    """A webhook: its URL, events, description."""
    with handled(url), client(url, key) as api:
        hook = api.get_webhook(webhook_id)
    show_document(hook, fmt, output, lambda: webhook_table(hook))


@webhooks.command("delete", epilog=EXIT_CODES_HELP)
@click.argument("webhook_id")
@api_options
def delete(webhook_id, url, key):
    """Stop sending to a webhook; its pending deliveries end failed."""
    with handled(url), client(url, key) as api:
        api.delete_webhook(webhook_id)
    click.echo(f"deleted webhook {webhook_id}")


@webhooks.command("test", epilog=EXIT_CODES_HELP)
@click.argument("webhook_id")
@output_options(("table", "json"), what="the delivery")
@api_options
def test(webhook_id, fmt, output, url, key):
    """Queue a `ping` event to the webhook (a worker sends it; `webhooks deliveries` shows how it went)."""
    with handled(url), client(url, key) as api:
        d = api.test_webhook(webhook_id)
    show_document(d, fmt, output, lambda: f"delivery {d['id']} of {d['event']} {d['status']}")


@webhooks.command("deliveries", epilog=EXIT_CODES_HELP)
@click.argument("webhook_id")
@click.option("--status", type=click.Choice(DELIVERY_STATES), default=None)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="At most this many, newest first.")
@output_options(("table", "json"), what="the list")
@api_options
def deliveries(webhook_id, status, limit, fmt, output, url, key):
    """What was sent to a webhook, newest first, with the last attempt's outcome."""
    with handled(url), client(url, key) as api:
        rows = list(islice(_pages(lambda **kw: api.list_webhook_deliveries(webhook_id, **kw), min(limit, 100),
                                  status=status), limit))
    show_document(rows, fmt, output, lambda: render(
        ["id", "event", "status", "attempts", "last answer", "created", "delivered"],
        [[d["id"], d["event"], d["status"], d["attempts"],
          d.get("last_status_code") or d.get("last_error") or "-", d["created_at"][:19],
          (d.get("delivered_at") or "-")[:19]] for d in rows], align_right={3}))


def _pages(list_page, page_size: int, **filters):
    cursor = None
    while True:
        page = list_page(limit=page_size, cursor=cursor, **filters)
        yield from page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return
