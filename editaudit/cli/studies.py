"""`editaudit study submit|get|list|wait|report|cancel`: a grid of edits on one model and scenario, run on the
workers, summarised (groups over seeds with intervals, Pareto front, layer depth, alpha paths, the paper's findings)
and recommended under a policy."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from editaudit.cli.common import (
    EXIT_BLOCKED,
    EXIT_OK,
    api_options,
    client,
    document_command,
    document_options,
    emit,
    fetch,
    handled,
    key_value_table,
    list_command,
    output_options,
    read_document,
    render_rows,
    show_document,
)
from editaudit.client import Client
from editaudit.client.types import Study, StudyReportFormat
from editaudit.contracts.statuses import Status

SUBMIT_EXIT = ("Exit codes: 0 queued (with --wait: at least one run succeeded), 1 with --wait: no run succeeded or "
               "the study was canceled, 2 error (a bad run is a 422 naming grid.runs.<i>), 3 a model or dataset it "
               "names does not exist, or --wait timed out, 4 usage.")
REPORTS: dict[str, StudyReportFormat] = {"markdown": "md", "html": "html", "json": "json"}


@click.group()
def study():
    """Studies: which edit should I ship? A grid of methods x layers x hyperparameters x seeds on one model."""


@study.command("submit", epilog=SUBMIT_EXIT)
@click.argument("spec", metavar="STUDY.yaml|STUDY.json")
@click.option("--wait", is_flag=True, help="Follow the study until every run has finished (a line per change).")
@click.option("--timeout", default=24 * 3600.0, show_default=True, type=click.FloatRange(0), metavar="SECONDS",
              help="Seconds --wait waits at most (then exit 3).")
@click.option("--poll", default=2.0, show_default=True, type=click.FloatRange(0.05), metavar="SECONDS")
@click.option("--idempotency-key", default=None, metavar="K", help="Retrying with the same key returns the first "
              "answer instead of a second study.")
@document_options("the answer (with --wait: the finished study)", quiet=True)
def submit(spec, wait, timeout, poll, idempotency_key, fmt, output, quiet, url, key):
    """Submit the study in STUDY.yaml (or .json). Every run is validated as an edit before anything is queued.
    @file values of model_id and the sets are uploaded first, as for `edits submit`.

    \b
    model_id: "@model.safetensors"
    edit_set: "@edit-set.npz"
    generalization_set: "@generalization.npz"
    test_set: builtin:digits-test
    audit: {attacks: [{id: pgd, name: pgd, eps: 0.05, steps: 10}]}
    grid:
      methods: [finetune, finetune_layer, low_rank, rewrite]
      layers: [conv2, fc1]
      hyperparams: {low_rank: {rank: [1, 4]}}
      seeds: [0, 1, 2]
    policy: default

    \b
    Examples:
      editaudit study submit study.yaml --wait
      editaudit study report STUDY_ID -o study.html
    """
    from editaudit.cli.refs import references, resolve

    request = read_document(spec, "STUDY")
    if not isinstance(request, dict):
        raise click.UsageError("STUDY must be a mapping (YAML) or an object (JSON)")
    with handled(url), client(url, key) as api:
        if references(request):
            request = resolve(request, Path(spec).parent, api, log=lambda m: click.echo(m, err=True),
                              body_file=Path(spec))
        job = api.submit_study(request, idempotency_key=idempotency_key)
        if not wait:
            show_document(job, fmt, output, lambda: f"study {job['id']} queued: {len(job['runs'])} runs",
                          job["id"] if quiet else None)
            return
        click.echo(f"study {job['id']} queued: {len(job['runs'])} runs; waiting ...", err=True)
        done = api.wait_for_study(job["id"], timeout=timeout, poll=poll, on_progress=_progress_line())
    show_document(done, fmt, output, lambda: study_table(done), done["id"] if quiet else None)
    sys.exit(EXIT_OK if done["status"] == Status.succeeded else EXIT_BLOCKED)


def _progress_line():
    last: list[Any] = [None]

    def report(s: Study) -> None:
        counts = s["counts"]
        if counts != last[0]:
            last[0] = counts
            click.echo(f"study {s['id']}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), err=True)

    return report


def study_table(s: Mapping[str, Any]) -> str:
    summary = s.get("summary") or {}
    policy = summary.get("policy") or {}
    rows = [("id", s["id"]), ("name", s.get("name") or "-"), ("status", s["status"]), ("model", s["model_id"]),
            ("runs", ", ".join(f"{n} {k}" for k, n in sorted(s["counts"].items()))),
            ("recommended", policy.get("recommended") or "none"),
            ("because", policy.get("reason") or "no run has finished")]
    rows += [(f"finding {f['id']}", f"{f['verdict']}: {f['claim']}") for f in summary.get("findings", [])]
    runs = [[r["index"], r["group"], r["seed"], r["status"], r["edit_id"]] for r in s["runs"]]
    return key_value_table(rows) + "\n\n" + render_rows(["#", "run", "seed", "status", "edit"], runs, {0, 2})


get = document_command(study, "get", Client.get_study, study_table,
                       "Show a study: its runs, the recommended run and the paper's findings.", argument="study_id")
list_ = list_command(
    study, Client.iter_studies, ["id", "name", "model", "runs", "created"],
    lambda s: [s["id"], s["name"] or "-", s["model_id"], s["runs"], s["created_at"][:19]],
    "The tenant's studies, newest first.", align_right={3})
cancel = document_command(study, "cancel", Client.cancel_study, lambda s: f"study {s['id']} {s['status']}",
                          "Cancel every run still queued or running; finished runs keep their results.",
                          argument="study_id")


@study.command("wait", epilog=SUBMIT_EXIT)
@click.argument("study_id")
@click.option("--timeout", default=24 * 3600.0, show_default=True, type=click.FloatRange(0), metavar="SECONDS")
@click.option("--poll", default=2.0, show_default=True, type=click.FloatRange(0.05), metavar="SECONDS")
@document_options("the finished study", quiet=True)
def wait_(study_id, timeout, poll, fmt, output, quiet, url, key):
    """Follow STUDY_ID until no run is queued or running (a line on stderr per change)."""
    done = fetch(url, key, lambda api: api.wait_for_study(study_id, timeout=timeout, poll=poll,
                                                          on_progress=_progress_line()))
    show_document(done, fmt, output, lambda: study_table(done), done["id"] if quiet else None)
    sys.exit(EXIT_OK if done["status"] == Status.succeeded else EXIT_BLOCKED)


@study.command("report")
@click.argument("study_id")
@output_options(("markdown", "html", "json"), default="markdown", what="the report")
@api_options
def report(study_id, fmt, output, url, key):
    """Write a study's report: markdown (recommendation and findings first), html (self-contained, with plots) or
    json (versioned). It covers the runs finished so far.

    \b
    Examples:
      editaudit study report STUDY_ID -o study.html
      editaudit study report STUDY_ID >> "$GITHUB_STEP_SUMMARY"
    """
    with handled(url):
        text = fetch(url, key, lambda api: api.get_study_report(study_id, REPORTS[fmt]))
    emit(text, output, fmt)
