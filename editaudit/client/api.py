"""`Client`: one method per operation of the editaudit API, named after its operationId, plus helpers that follow
pagination cursors (`iter_edits`, ...) and wait for a job (`wait_for_edit`).

Every method raises `ApiError` for an error answer (its `status`, `detail` and `errors` come from the problem
body) and lets httpx's `TransportError` through when the server cannot be reached."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import httpx

from editaudit.client.http import Transport, operation, operation_of
from editaudit.client.types import (
    TERMINAL_STATUSES,
    Alias,
    Archs,
    Audit,
    AuditProfile,
    AuditProfileList,
    AuditSummary,
    Dataset,
    DeliveryState,
    Download,
    Edit,
    EditAccepted,
    EditRequest,
    EditSummary,
    Flipped,
    Gate,
    Health,
    Layers,
    Lineage,
    Methods,
    Model,
    ModelSpec,
    Page,
    Policy,
    PolicyList,
    Promotion,
    Promotions,
    Ready,
    ReportFormat,
    Revert,
    Sample,
    SamplePage,
    Status,
    Study,
    StudyAccepted,
    StudyReportFormat,
    StudySummary,
    Webhook,
    WebhookCreated,
    WebhookDelivery,
    WebhookEvent,
)

Upload = str | os.PathLike[str] | bytes | IO[bytes]  # a path, the bytes, or an open binary file (streamed)
Dest = str | os.PathLike[str] | IO[bytes]
T = TypeVar("T")

IDEMPOTENCY_HEADER = "Idempotency-Key"


@contextlib.contextmanager
def _file_part(data: Upload, default_name: str) -> Iterator[tuple[str, Any]]:
    """(filename, content) for a multipart field; a path is opened here and streamed, not read into memory."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        with open(path, "rb") as f:
            yield path.name, f
    elif isinstance(data, bytes):
        yield default_name, data
    else:
        yield Path(getattr(data, "name", None) or default_name).name, data


def _dataset_name(data: Upload) -> str:
    """The name bytes without one are sent under: what their first bytes say they are (a gzip or tar archive, a zip
    of images or an .npz, else safetensors)."""
    if not isinstance(data, bytes):
        return "data.npz"
    if data[:2] == b"\x1f\x8b":
        return "data.tar.gz"
    if data[257:262] == b"ustar":
        return "data.tar"
    if data[:4] == b"PK\x03\x04":
        import io
        import zipfile

        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "data.npz"
        return "data.npz" if any(n.endswith(".npy") for n in names) else "data.zip"
    return "data.safetensors"


Job = TypeVar("Job", Edit, Study)


def _poll(get: Callable[[], Job], what: str, timeout: float | None, poll: float,
          on_progress: Callable[[Job], None] | None) -> Job:
    """`get()` every `poll` seconds until its status is final; TimeoutError after `timeout` seconds (None: never)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = get()
        if on_progress is not None:
            on_progress(job)
        if job["status"] in TERMINAL_STATUSES:
            return job
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} still {job['status']} after {timeout:.0f}s")
        time.sleep(poll)


class Client:
    """A typed client of the editaudit API.

    `url` defaults to $EDITAUDIT_URL (else http://127.0.0.1:8000), `key` to $EDITAUDIT_API_KEY (else
    $EDITAUDIT_API_TOKEN); without a key no Authorization header is sent (the embedded server on loopback accepts
    that while no key exists). Use it as a context manager, or call `close()`."""

    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60.0,
                 http: httpx.Client | None = None):
        self._t = Transport(url, key, timeout, http)
        self.url = self._t.url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._t.close()

    def _json(self, method: Callable[..., T], params: dict[str, Any] | None = None, **content: Any) -> T:
        """The JSON answer of `method`'s operation, as the type `method` declares (the server's schema)."""
        return cast(T, self._t.send(operation_of(method), params or {}, **content).json())

    def _text(self, method: Callable[..., Any], params: dict[str, Any] | None = None) -> str:
        return self._t.send(operation_of(method), params or {}).text

    # --- health and catalog -----------------------------------------------------------------------------------------

    @operation("GET", "/healthz")
    def healthz(self) -> Health:
        """200 once the API serves and its database answers (no key needed)."""
        return self._json(self.healthz)

    @operation("GET", "/readyz")
    def readyz(self) -> Ready:
        """Every dependency is ready; otherwise ApiError 503 whose `body["checks"]` says what is not."""
        return self._json(self.readyz)

    @operation("GET", "/metrics")
    def get_metrics(self) -> str:
        """Prometheus text exposition."""
        return self._text(self.get_metrics)

    @operation("GET", "/archs")
    def list_archs(self) -> Archs:
        return self._json(self.list_archs)

    @operation("GET", "/methods")
    def list_methods(self) -> Methods:
        """Edit methods with their traits and the JSON schema of their `hyperparams`."""
        return self._json(self.list_methods)

    # --- models -----------------------------------------------------------------------------------------------------

    @operation("POST", "/models")
    def upload_model(self, weights: Upload, spec: ModelSpec | Mapping[str, Any] | None = None, *,
                     config: Mapping[str, Any] | None = None, preprocessor_config: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None) -> Model:
        """Upload a safetensors state_dict with its spec (and, for a Hugging Face model, its config.json and
        preprocessor_config.json as dicts). The same weights and spec again return the existing model (not a
        second one). A timm or Hugging Face model comes back `validating`: see `wait_until_ready`."""
        files: dict[str, Any] = {}
        for name, doc in (("config", config), ("preprocessor_config", preprocessor_config)):
            if doc is not None:
                files[name] = (f"{name}.json", json.dumps(dict(doc)).encode(), "application/json")
        data = {"spec": json.dumps(dict(spec))} if spec is not None else {}
        with _file_part(weights, "model.safetensors") as (name, f):
            return self._json(self.upload_model, files={"weights": (name, f, "application/octet-stream"), **files},
                              data=data, headers={IDEMPOTENCY_HEADER: idempotency_key})

    def import_timm_model(self, name: str, weights: Upload, *, num_classes: int | None = None,
                          input_shape: Sequence[int] | None = None, wait: bool = True, **spec: Any) -> Model:
        """A timm classifier (`name` as timm spells it, e.g. "resnet50", or "timm/resnet50") with its weights; what
        the spec leaves out comes from timm's pretrained config. With `wait`, returns once a worker has checked it
        (`ready`, or ApiError-free `invalid` with `error`)."""
        arch = name if name.startswith("timm/") else f"timm/{name}"
        body = {"arch": arch, **{k: v for k, v in (("num_classes", num_classes), ("input_shape", input_shape))
                                 if v is not None}, **spec}
        model = self.upload_model(weights, body)
        return self.wait_until_ready("model", model["id"]) if wait else model

    def import_hf_model(self, directory: str | os.PathLike[str], *, wait: bool = True, **spec: Any) -> Model:
        """A Hugging Face image classifier saved with `save_pretrained(..., safe_serialization=True)`: the
        directory's config.json, preprocessor_config.json (when present) and model.safetensors."""
        folder = Path(directory)
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: save the model with safe_serialization=True (pickle files "
                                    "such as pytorch_model.bin are refused)")
        config = json.loads((folder / "config.json").read_text())
        pre = folder / "preprocessor_config.json"
        model = self.upload_model(weights, spec or None, config=config,
                                  preprocessor_config=json.loads(pre.read_text()) if pre.is_file() else None)
        return self.wait_until_ready("model", model["id"]) if wait else model

    def wait_until_ready(self, kind: str, row_id: str, *, timeout: float | None = 600.0, poll: float = 1.0,
                         on_progress: Callable[[Any], None] | None = None) -> Any:
        """Poll a model or dataset ("model" | "dataset") until it is no longer `validating`; returns it (`ready`, or
        `invalid` with `error`). TimeoutError after `timeout` seconds (None: no limit)."""
        get = {"model": self.get_model, "dataset": self.get_dataset}[kind]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = cast(Any, get(row_id))
            if on_progress is not None:
                on_progress(row)
            if row.get("status", "ready") != "validating":
                return row
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{kind} {row_id} still validating after {timeout:.0f}s")
            time.sleep(poll)

    @operation("GET", "/models", query=("limit", "cursor", "created_after"))
    def list_models(self, *, limit: int | None = None, cursor: str | None = None,
                    created_after: datetime | str | None = None) -> Page[Model]:
        return self._json(self.list_models, {"limit": limit, "cursor": cursor, "created_after": created_after})

    def iter_models(self, *, page_size: int | None = None, created_after: datetime | str | None = None
                    ) -> Iterator[Model]:
        """Every model, newest first, fetching pages as the iteration goes."""
        return pages(self.list_models, page_size, created_after=created_after)

    @operation("GET", "/models/{model_id}")
    def get_model(self, model_id: str) -> Model:
        return self._json(self.get_model, {"model_id": model_id})

    @operation("GET", "/models/{model_id}/weights")
    def download_model_weights(self, model_id: str, dest: Dest) -> Download:
        """Stream the model's safetensors to `dest`, verified against the server's sha256."""
        return self._t.download(operation_of(self.download_model_weights), {"model_id": model_id}, dest)

    @operation("GET", "/models/{model_id}/layers")
    def get_model_layers(self, model_id: str) -> Layers:
        """The layers an edit may name, with type, weight shape and parameter count."""
        return self._json(self.get_model_layers, {"model_id": model_id})

    @operation("GET", "/models/{model_id}/lineage")
    def get_model_lineage(self, model_id: str) -> Lineage:
        return self._json(self.get_model_lineage, {"model_id": model_id})

    # --- datasets ---------------------------------------------------------------------------------------------------

    @operation("POST", "/datasets")
    def upload_dataset(self, file: Upload, *, filename: str | None = None, options: Mapping[str, Any] | None = None,
                       idempotency_key: str | None = None) -> Dataset:
        """Upload safetensors or .npz with x, y (optional x_orig, mask), or an image-folder archive (.tar, .tar.gz,
        .zip; `options`: resize, crop, interpolation, class_to_idx). The file name's suffix tells the format: give
        `filename` when uploading bytes that are not an .npz. An archive comes back `validating`: see
        `wait_until_ready` or `import_dataset`."""
        data = {"options": json.dumps(dict(options))} if options is not None else {}
        with _file_part(file, _dataset_name(file)) as (name, f):
            return self._json(self.upload_dataset, files={"file": (filename or name, f, "application/octet-stream")},
                              data=data, headers={IDEMPOTENCY_HEADER: idempotency_key})

    def import_dataset(self, file: Upload, *, options: Mapping[str, Any] | None = None, wait: bool = True,
                       on_progress: Callable[[Dataset], None] | None = None, timeout: float | None = 3600.0
                       ) -> Dataset:
        """Upload a dataset (an archive is decoded by a worker) and, with `wait`, return it once it is `ready` or
        `invalid`; `on_progress` sees each poll (its `progress`: images decoded so far)."""
        ds = self.upload_dataset(file, options=options)
        return self.wait_until_ready("dataset", ds["id"], on_progress=on_progress, timeout=timeout) if wait else ds

    @operation("GET", "/datasets", query=("limit", "cursor", "created_after"))
    def list_datasets(self, *, limit: int | None = None, cursor: str | None = None,
                      created_after: datetime | str | None = None) -> Page[Dataset]:
        return self._json(self.list_datasets, {"limit": limit, "cursor": cursor, "created_after": created_after})

    def iter_datasets(self, *, page_size: int | None = None, created_after: datetime | str | None = None
                      ) -> Iterator[Dataset]:
        return pages(self.list_datasets, page_size, created_after=created_after)

    @operation("GET", "/datasets/{dataset_id}")
    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._json(self.get_dataset, {"dataset_id": dataset_id})

    # --- edits ------------------------------------------------------------------------------------------------------

    @operation("POST", "/edits")
    def submit_edit(self, body: EditRequest | Mapping[str, Any], *,
                    idempotency_key: str | None = None) -> EditAccepted:
        """Queue an edit and its audit. With `idempotency_key`, a retry of the same body returns the first answer
        instead of queueing a second job."""
        return self._json(self.submit_edit, json=dict(body), headers={IDEMPOTENCY_HEADER: idempotency_key})

    @operation("GET", "/edits", query=("limit", "cursor", "model_id", "status", "method", "created_after"))
    def list_edits(self, *, limit: int | None = None, cursor: str | None = None, model_id: str | None = None,
                   status: Status | None = None, method: str | None = None,
                   created_after: datetime | str | None = None) -> Page[EditSummary]:
        return self._json(self.list_edits, {"limit": limit, "cursor": cursor, "model_id": model_id,
                                            "status": status, "method": method, "created_after": created_after})

    def iter_edits(self, *, page_size: int | None = None, model_id: str | None = None, status: Status | None = None,
                   method: str | None = None, created_after: datetime | str | None = None) -> Iterator[EditSummary]:
        """Every edit matching the filters, newest first, following `next_cursor`."""
        return pages(self.list_edits, page_size, model_id=model_id, status=status, method=method,
                      created_after=created_after)

    @operation("GET", "/edits/{edit_id}")
    def get_edit(self, edit_id: str) -> Edit:
        return self._json(self.get_edit, {"edit_id": edit_id})

    @operation("GET", "/edits/{edit_id}/weights")
    def download_edit_weights(self, edit_id: str, dest: Dest) -> Download:
        """Stream the edited model's safetensors to `dest`, verified against the server's sha256 (ApiError 409
        while the edit has not succeeded)."""
        return self._t.download(operation_of(self.download_edit_weights), {"edit_id": edit_id}, dest)

    @operation("GET", "/edits/{edit_id}/delta")
    def download_edit_delta(self, edit_id: str, dest: Dest) -> Download:
        """Only the tensors the edit changed (new values), as safetensors."""
        return self._t.download(operation_of(self.download_edit_delta), {"edit_id": edit_id}, dest)

    @operation("POST", "/edits/{edit_id}/cancel")
    def cancel_edit(self, edit_id: str) -> Edit:
        """A queued edit never starts; a running one stops at its next batch (ApiError 409 once finished)."""
        return self._json(self.cancel_edit, {"edit_id": edit_id})

    def wait_for_edit(self, edit_id: str, *, timeout: float | None = 600.0, poll: float = 1.0,
                      on_progress: Callable[[Edit], None] | None = None) -> Edit:
        """Poll until the edit succeeded, failed or was canceled, and return it; `on_progress` sees every poll's
        edit (its `status` and `progress` {stage, done, total}). TimeoutError after `timeout` seconds (None: no
        limit)."""
        return _poll(lambda: self.get_edit(edit_id), f"edit {edit_id}", timeout, poll, on_progress)

    # --- studies ----------------------------------------------------------------------------------------------------

    @operation("POST", "/studies")
    def submit_study(self, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> StudyAccepted:
        """Queue a study: every run of its grid is validated first (ApiError 422 naming `grid.runs.<i>`), then
        queued as an ordinary edit."""
        return self._json(self.submit_study, json=dict(body), headers={IDEMPOTENCY_HEADER: idempotency_key})

    @operation("GET", "/studies", query=("limit", "cursor", "created_after"))
    def list_studies(self, *, limit: int | None = None, cursor: str | None = None,
                     created_after: datetime | str | None = None) -> Page[StudySummary]:
        return self._json(self.list_studies, {"limit": limit, "cursor": cursor, "created_after": created_after})

    def iter_studies(self, *, page_size: int | None = None,
                     created_after: datetime | str | None = None) -> Iterator[StudySummary]:
        return pages(self.list_studies, page_size, created_after=created_after)

    @operation("GET", "/studies/{study_id}")
    def get_study(self, study_id: str) -> Study:
        return self._json(self.get_study, {"study_id": study_id})

    @operation("GET", "/studies/{study_id}/report.{fmt}")
    def get_study_report(self, study_id: str, fmt: StudyReportFormat) -> str:
        """md (recommendation and findings first), html (self-contained, with plots) or json (versioned)."""
        return self._text(self.get_study_report, {"study_id": study_id, "fmt": fmt})

    @operation("POST", "/studies/{study_id}/cancel")
    def cancel_study(self, study_id: str) -> Study:
        """Cancel every run still queued or running; finished runs keep their results (ApiError 409 when the
        study was canceled already)."""
        return self._json(self.cancel_study, {"study_id": study_id})

    def wait_for_study(self, study_id: str, *, timeout: float | None = 3600.0, poll: float = 2.0,
                       on_progress: Callable[[Study], None] | None = None) -> Study:
        """Poll until no run is queued or running and return the study (TimeoutError after `timeout` s)."""
        return _poll(lambda: self.get_study(study_id), f"study {study_id}", timeout, poll, on_progress)

    # --- audits -----------------------------------------------------------------------------------------------------

    @operation("GET", "/audits", query=("limit", "cursor", "edit_id", "model_id", "status", "method",
                                        "created_after"))
    def list_audits(self, *, limit: int | None = None, cursor: str | None = None, edit_id: str | None = None,
                    model_id: str | None = None, status: Status | None = None, method: str | None = None,
                    created_after: datetime | str | None = None) -> Page[AuditSummary]:
        return self._json(self.list_audits, {"limit": limit, "cursor": cursor, "edit_id": edit_id,
                                             "model_id": model_id, "status": status, "method": method,
                                             "created_after": created_after})

    def iter_audits(self, *, page_size: int | None = None, edit_id: str | None = None, model_id: str | None = None,
                    status: Status | None = None, method: str | None = None,
                    created_after: datetime | str | None = None) -> Iterator[AuditSummary]:
        return pages(self.list_audits, page_size, edit_id=edit_id, model_id=model_id, status=status, method=method,
                      created_after=created_after)

    @operation("GET", "/audits/{audit_id}")
    def get_audit(self, audit_id: str) -> Audit:
        return self._json(self.get_audit, {"audit_id": audit_id})

    @operation("GET", "/audits/{audit_id}/report.{fmt}", query=("policy",))
    def get_audit_report(self, audit_id: str, fmt: ReportFormat, *, policy: str | None = None) -> str:
        """The rendered report: html (self-contained, with plots), md (a PR comment), json (versioned) or xml
        (JUnit of the gate under `policy`, default `default`)."""
        return self._text(self.get_audit_report, {"audit_id": audit_id, "fmt": fmt, "policy": policy})

    @operation("GET", "/audits/{audit_id}/samples", query=("condition", "split", "flipped", "cursor", "limit"))
    def list_audit_samples(self, audit_id: str, *, condition: str = "clean", split: str = "test",
                           flipped: Flipped | None = None, cursor: str | None = None,
                           limit: int | None = None) -> SamplePage:
        """One page of the audit's samples under `condition` (clean, adv.<id>, corruption.<type>.<severity>), by
        index: all, or those the edit broke or fixed."""
        return self._json(self.list_audit_samples, {"audit_id": audit_id, "condition": condition, "split": split,
                                                    "flipped": flipped, "cursor": cursor, "limit": limit})

    def iter_audit_samples(self, audit_id: str, *, condition: str = "clean", split: str = "test",
                           flipped: Flipped | None = None, page_size: int | None = None) -> Iterator[Sample]:
        cursor: str | None = None
        while True:
            page = self.list_audit_samples(audit_id, condition=condition, split=split, flipped=flipped,
                                           cursor=cursor, limit=page_size)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    @operation("GET", "/audits/{audit_id}/samples.parquet")
    def download_audit_samples(self, audit_id: str, dest: Dest) -> Download:
        """The per-sample outcomes file (Parquet) every statistic of the audit was computed from."""
        return self._t.download(operation_of(self.download_audit_samples), {"audit_id": audit_id}, dest)

    @operation("GET", "/audits/{audit_id}/samples/{index}/image", query=("condition", "split"))
    def get_audit_sample_image(self, audit_id: str, index: int, dest: Dest, *, condition: str = "clean",
                               split: str = "test") -> Download:
        """The input the candidate saw for a kept sample, as PNG (ApiError 404 for one the audit did not keep)."""
        return self._t.download(operation_of(self.get_audit_sample_image), {"audit_id": audit_id, "index": index,
                                                                           "condition": condition, "split": split},
                                dest)

    # --- audit profiles and policies --------------------------------------------------------------------------------

    @operation("GET", "/audit-profiles")
    def list_audit_profiles(self) -> AuditProfileList:
        return self._json(self.list_audit_profiles)

    @operation("POST", "/audit-profiles")
    def create_audit_profile(self, name: str, audit: Mapping[str, Any], *,
                             idempotency_key: str | None = None) -> AuditProfile:
        """A new version of the tenant's named audit config (admin scope)."""
        return self._json(self.create_audit_profile, json={"name": name, "audit": dict(audit)},
                          headers={IDEMPOTENCY_HEADER: idempotency_key})

    @operation("GET", "/audit-profiles/{name}", query=("version",))
    def get_audit_profile(self, name: str, *, version: int | None = None) -> AuditProfile:
        return self._json(self.get_audit_profile, {"name": name, "version": version})

    @operation("GET", "/policies")
    def list_policies(self) -> PolicyList:
        return self._json(self.list_policies)

    @operation("POST", "/policies")
    def create_policy(self, name: str, policy: Mapping[str, Any], *, idempotency_key: str | None = None) -> Policy:
        """A new version of the tenant's named gate policy (admin scope)."""
        return self._json(self.create_policy, json={"name": name, "policy": dict(policy)},
                          headers={IDEMPOTENCY_HEADER: idempotency_key})

    @operation("GET", "/policies/{name}")
    def get_policy(self, name: str) -> Policy:
        return self._json(self.get_policy, {"name": name})

    # --- gate and aliases -------------------------------------------------------------------------------------------

    @operation("GET", "/edits/{edit_id}/gate", query=("policy",))
    def gate_edit(self, edit_id: str, *, policy: str | None = None) -> Gate:
        """The edit's finished audit under a named policy (default `default`)."""
        return self._json(self.gate_edit, {"edit_id": edit_id, "policy": policy})

    @operation("POST", "/gate")
    def gate(self, edit_id: str, policy: str | Mapping[str, Any] = "default") -> Gate:
        """Like gate_edit, with a policy name or an inline policy document."""
        return self._json(self.gate, json={"edit_id": edit_id,
                                           "policy": policy if isinstance(policy, str) else dict(policy)})

    @operation("POST", "/edits/{edit_id}/promote")
    def promote_edit(self, edit_id: str, *, alias: str = "production", policy: str = "default",
                     override_reason: str | None = None) -> Promotion:
        """Move the model family's alias to the edit's model if the named policy passes (ApiError 409 with
        `body["gate"]` when it does not), or with a recorded override reason."""
        return self._json(self.promote_edit, {"edit_id": edit_id},
                          json={"alias": alias, "policy": policy, "override_reason": override_reason})

    @operation("POST", "/edits/{edit_id}/revert")
    def revert_edit(self, edit_id: str, *, reason: str | None = None) -> Revert:
        return self._json(self.revert_edit, {"edit_id": edit_id}, json={"reason": reason})

    @operation("GET", "/aliases/{name}", query=("family",))
    def get_alias(self, name: str, *, family: str | None = None) -> Alias:
        return self._json(self.get_alias, {"name": name, "family": family})

    @operation("GET", "/promotions", query=("edit_id",))
    def list_promotions(self, *, edit_id: str | None = None) -> Promotions:
        return self._json(self.list_promotions, {"edit_id": edit_id})

    # --- webhooks ---------------------------------------------------------------------------------------------------

    @operation("POST", "/webhooks")
    def create_webhook(self, url: str, events: Sequence[WebhookEvent] = ("*",), *, description: str | None = None,
                       idempotency_key: str | None = None) -> WebhookCreated:
        """Send the tenant's events (`edit.succeeded`, ..., or `*`) to `url`, whose host the operator must allow
        (admin scope). The answer's `secret` is shown only here: keep it to verify each delivery's signature."""
        return self._json(self.create_webhook, json={"url": url, "events": list(events), "description": description},
                          headers={IDEMPOTENCY_HEADER: idempotency_key})

    @operation("GET", "/webhooks", query=("limit", "cursor", "created_after"))
    def list_webhooks(self, *, limit: int | None = None, cursor: str | None = None,
                      created_after: datetime | str | None = None) -> Page[Webhook]:
        return self._json(self.list_webhooks, {"limit": limit, "cursor": cursor, "created_after": created_after})
    @operation("GET", "/webhooks/{webhook_id}")
    def get_webhook(self, webhook_id: str) -> Webhook:
        return self._json(self.get_webhook, {"webhook_id": webhook_id})

    @operation("DELETE", "/webhooks/{webhook_id}")
    def delete_webhook(self, webhook_id: str) -> None:
        """Stop sending to it; its pending deliveries end failed."""
        self._t.send(operation_of(self.delete_webhook), {"webhook_id": webhook_id})

    @operation("GET", "/webhooks/{webhook_id}/deliveries", query=("limit", "cursor", "status"))
    def list_webhook_deliveries(self, webhook_id: str, *, limit: int | None = None, cursor: str | None = None,
                                status: DeliveryState | None = None) -> Page[WebhookDelivery]:
        """What was sent to the webhook, newest first, with each attempt's outcome."""
        return self._json(self.list_webhook_deliveries, {"webhook_id": webhook_id, "limit": limit, "cursor": cursor,
                                                         "status": status})
    @operation("POST", "/webhooks/{webhook_id}/test")
    def test_webhook(self, webhook_id: str) -> WebhookDelivery:
        """Queue a `ping` event to the webhook; a worker sends it (follow it with list_webhook_deliveries)."""
        return self._json(self.test_webhook, {"webhook_id": webhook_id})


def pages(list_page: Callable[..., Page[T]], page_size: int | None, **filters: Any) -> Iterator[T]:
    """Items of every page of a listing (`client.list_webhooks`, or any list_* with its other arguments bound),
    requesting the next page only when the previous one is used up: what the iter_* methods return."""
    cursor = None
    while True:
        page = list_page(limit=page_size, cursor=cursor, **filters)
        yield from page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return
