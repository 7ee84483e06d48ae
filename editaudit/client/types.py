"""What the API sends and takes, as TypedDicts: plain JSON dicts at run time, checked by a type checker, and held to
the server's OpenAPI schema by tests/integration/test_client_contract.py (every key of every response type).

Times are ISO 8601 strings in UTC, as the JSON carries them. Ids are opaque strings. (No `from __future__ import
annotations` here: TypedDict reads NotRequired[...] from evaluated annotations.)"""

from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})  # a job in one never changes
ReportFormat = Literal["html", "md", "json", "xml"]

Item = TypeVar("Item")


class Page(TypedDict, Generic[Item]):
    """One page of a listing, newest first; pass `next_cursor` as `cursor` for the next (None: the last page)."""

    items: list[Item]
    next_cursor: str | None


class FieldError(TypedDict):
    field: str
    reason: str


# --- health and catalog ---------------------------------------------------------------------------------------------

class WorkerHealth(TypedDict):
    alive: bool
    restarts: int


class Health(TypedDict):
    status: str
    worker: WorkerHealth | None  # the embedded server's local worker; None when workers run elsewhere


class WorkerBeat(TypedDict):
    age_s: float  # since the worker's last heartbeat
    fresh: bool  # within the server's worker_stale_s


class Ready(TypedDict):
    status: str
    checks: dict[str, str]  # database, migrations, broker, store
    workers: dict[str, WorkerBeat]  # by worker name: informational, never a reason for 503
    warnings: list[str]  # e.g. no worker beat recently


class Archs(TypedDict):
    archs: list[str]
    families: NotRequired[dict[str, str]]  # "timm/", "hf/": prefixes a worker checks, with what they take


class MethodInfo(TypedDict):
    method: str
    traits: dict[str, Any]
    params_schema: dict[str, Any]  # JSON schema of the method's `hyperparams`


class Methods(TypedDict):
    methods: list[MethodInfo]


# --- models and datasets --------------------------------------------------------------------------------------------

class Preprocess(TypedDict):
    resize: NotRequired[int | None]  # shorter side; then a centre crop to the input size
    interpolation: NotRequired[str]


class ModelSpec(TypedDict):
    """Sent with a checkpoint: `{"arch": "torchvision/resnet18", "num_classes": 10, "input_shape": [3, 32, 32]}`;
    for `timm/<name>` every field but `arch` may be left to timm's pretrained config."""

    arch: str
    num_classes: NotRequired[int]
    input_shape: NotRequired[list[int]]  # [C, H, W]
    mean: NotRequired[list[float] | None]
    std: NotRequired[list[float] | None]
    class_names: NotRequired[list[str] | None]
    preprocess: NotRequired[Preprocess | None]


IngestStatus = Literal["validating", "ready", "invalid"]


class Model(TypedDict):
    id: str
    sha256: str
    arch: str
    spec: dict[str, Any]
    status: IngestStatus  # edits need "ready"; timm / Hugging Face uploads are "validating" until a worker checked them
    error: str | None  # why it is "invalid"
    size_bytes: int
    parent_model_id: str | None  # set on a model an edit produced
    edit_id: str | None
    created_at: str


class Layer(TypedDict):
    name: str
    type: str
    weight_shape: list[int] | None  # None: the module owns parameters but no weight
    parameters: int
    rewrite: NotRequired[str | None]  # Linear / Conv2d: what rewrite matches there
    checkpoint_name: NotRequired[str | None]  # its path in the checkpoint, where transformers renamed it


class Layers(TypedDict):
    model_id: str
    arch: str
    layers: list[Layer]


class LineageNode(TypedDict):
    id: str
    edit_id: str | None
    parent_model_id: str | None
    sha256: str | None
    created_at: str


class Lineage(TypedDict):
    model_id: str
    ancestors: list[LineageNode]  # root first
    children: list[LineageNode]


class Dataset(TypedDict):
    id: str
    sha256: str
    n: int
    shape: list[int]
    filename: str
    has_x_orig: bool
    has_mask: bool
    status: IngestStatus  # archives are "validating" until a worker has decoded them
    error: str | None
    classes: list[str] | None
    options: dict[str, Any] | None
    progress: dict[str, Any] | None
    created_at: str


# --- edits ----------------------------------------------------------------------------------------------------------

class EditRequest(TypedDict):
    """The body of `submit_edit`; `hyperparams` per method (see `list_methods`), `audit` as README describes, or
    `{"profile": NAME}` to run a stored audit profile."""

    model_id: str
    method: str
    layers: NotRequired[list[str]]
    hyperparams: NotRequired[dict[str, Any]]
    edit_set: str
    generalization_set: NotRequired[str | None]
    test_set: str
    audit: NotRequired[dict[str, Any]]
    sweep: NotRequired[bool]


class Progress(TypedDict):
    stage: str
    done: int
    total: int


class SubEdit(TypedDict):
    layer: str
    id: str
    audit_id: str


class EditAccepted(TypedDict):
    id: str
    status: Status
    audit_id: str
    sub_edits: list[SubEdit] | None  # one per layer of a sweep


class Edit(TypedDict):
    id: str
    status: Status
    progress: Progress | None
    error: str | None
    model_id: str
    edited_model_id: str | None  # set once it succeeded
    audit_id: str
    method: str
    layers: list[str]
    hyperparams: dict[str, Any]  # as run, defaults included
    edit_set: str
    generalization_set: str | None
    test_set: str
    info: dict[str, Any] | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    sweep: bool
    sweep_id: str | None
    study_id: str | None  # a run of this study
    sub_edits: list[SubEdit] | None
    delta_sha256: str | None
    reverted_at: str | None


class EditSummary(TypedDict):
    id: str
    status: Status
    method: str
    model_id: str
    layers: list[str]
    sweep_id: str | None
    edited_model_id: str | None
    created_at: str
    finished_at: str | None


# --- studies --------------------------------------------------------------------------------------------------------

StudyReportFormat = Literal["html", "md", "json"]


class StudyRun(TypedDict):
    index: int
    group: str  # the run without its seed: runs of one group differ only by seed
    seed: int
    method: str
    layers: list[str]
    edit_id: str
    audit_id: str
    status: Status
    error: str | None
    worker: str | None  # host:pid of the worker of its last attempt


class StudyAccepted(TypedDict):
    id: str
    runs: list[StudyRun]


class Study(TypedDict):
    id: str
    name: str | None
    model_id: str
    status: Status
    counts: dict[str, int]  # runs per status
    created_at: str
    canceled_at: str | None
    request: dict[str, Any]  # as stored, defaults included
    runs: list[StudyRun]
    summary: dict[str, Any]  # editaudit.study.summary: groups, pareto, by_depth, alpha_curves, recommended, findings


class StudySummary(TypedDict):
    id: str
    name: str | None
    model_id: str
    runs: int
    created_at: str
    canceled_at: str | None


# --- audits ---------------------------------------------------------------------------------------------------------

class AuditMetrics(TypedDict):
    """Metric name -> value per model (None: undefined, e.g. a success rate where a model got nothing right)."""

    baseline: dict[str, float | None]
    candidate: dict[str, float | None]


class AuditIntervals(TypedDict):
    """Metric name -> the 95% Wilson interval [low, high] of that accuracy, per model."""

    baseline: dict[str, list[float]]
    candidate: dict[str, list[float]]


class Discordant(TypedDict):
    baseline_only: int  # inputs the edit lost
    candidate_only: int  # inputs it gained


class Delta(TypedDict):
    """candidate - baseline of one metric. `n`: paired samples, or [candidate, baseline] trials of an unpaired delta
    (a success rate); `images`/`conditions`: a corruption aggregate's shape."""

    value: float | None
    ci95: list[float] | None
    p_value: float | None
    n: int | list[int] | None
    discordant: Discordant | None
    images: int | None
    conditions: int | None
    method: str | None


class Curve(TypedDict):
    eps: list[float]
    baseline: list[float | None]
    candidate: list[float | None]


# `for` is a Python keyword: the functional form
HeldOut = TypedDict("HeldOut", {"n": int, "of": int, "seed": int, "ids": list[int], "for": list[str]})


class SplitSamples(TypedDict):
    n: int
    of: int
    ids: list[int] | None  # indices into the whole split; None: all of it
    held_out: HeldOut | None


class AlphaPoint(TypedDict):
    alpha: float
    metrics: dict[str, float | None]


class MLISummary(TypedDict):
    monotone: bool
    alpha: float
    evaluations: int | None
    search: str | None
    smaller_alpha_excluded: str | None
    target_split: str | None
    threshold: float | None


class SweepRow(TypedDict):
    layer: str
    edit_id: str
    status: Status
    error: str | None
    edited_model_id: str | None
    metrics: dict[str, float | None]
    deltas: dict[str, Delta]
    info: dict[str, Any]


class SweepTable(TypedDict):
    metrics: list[str]
    rows: list[SweepRow]
    best: dict[str, str]  # metric -> the best layer


class AuditProfileRecord(TypedDict):
    tenant: str | None
    name: str
    version: int | None
    sha256: str | None


class Audit(TypedDict):
    """`metrics` = {"baseline": {NAME: value}, "candidate": {NAME: value}}, `deltas` = {NAME: {"value", "ci95",
    "p_value", ...}}; metric names are `<split>.<measure>` (README). Until the audit has a result, `metrics` and
    `deltas` are empty and the other measured parts None."""

    id: str
    status: Status
    edit_id: str
    schema_version: int | None
    metrics: AuditMetrics
    deltas: dict[str, Delta]
    samples: dict[str, SplitSamples] | None
    durations_s: dict[str, float] | None
    device: str | None
    intervals: AuditIntervals | None
    notes: list[str] | None
    curves: dict[str, Curve] | None  # "<split>.adv.<attack id>" -> accuracy vs eps
    baseline_cached: bool | None
    alpha_curve: list[AlphaPoint] | None
    mli: MLISummary | None
    sweep: SweepTable | None
    sections: dict[str, Any] | None  # free-form sections an edit method adds
    config: dict[str, Any]  # the audit config that ran, defaults included
    profile: AuditProfileRecord | None
    versions: dict[str, str] | None
    created_at: str
    finished_at: str | None


Flipped = Literal["broken", "fixed"]


class Sample(TypedDict):
    """One sample of an audit under one condition: both models' predictions."""

    index: int  # in the whole split as uploaded
    position: int
    label: int
    baseline_pred: int
    candidate_pred: int
    baseline_correct: bool
    candidate_correct: bool
    label_name: str | None
    baseline_class: str | None
    candidate_class: str | None
    image: str | None  # the kept input's URL (PNG), or None


class SamplePage(TypedDict):
    split: str
    condition: str
    flipped: str | None
    items: list[Sample]
    next_cursor: str | None
    conditions: list[str]


class AuditSummary(TypedDict):
    id: str
    status: Status
    edit_id: str
    created_at: str
    finished_at: str | None


class AuditProfile(TypedDict):
    tenant: str
    name: str
    version: int
    audit: dict[str, Any]
    created_at: str


class AuditProfileList(TypedDict):
    tenant: str
    profiles: list[str]


# --- policies, gate, aliases ----------------------------------------------------------------------------------------

class Policy(TypedDict):
    tenant: str | None  # None for a built-in policy
    name: str
    version: int | str  # 1, 2, ... or "builtin"
    policy: dict[str, Any]
    created_at: str | None


class PolicyList(TypedDict):
    tenant: str
    policies: list[str]
    builtin: list[str]


class GateRule(TypedDict):
    rule: str
    metric: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    threshold: float | None
    p_value: float | None
    outcome: str  # pass | warn | fail
    reason: str
    n: int | None
    bound: float | None
    decision: str | None
    lenient: bool
    undecided: bool
    samples_needed: int | None


class Gate(TypedDict):
    edit_id: str
    audit_id: str
    policy: dict[str, Any]
    verdict: str  # pass | warn | fail
    rules: list[GateRule]
    notes: list[str]


class Promotion(TypedDict):
    alias: str
    family: str
    model_id: str | None
    previous_model_id: str | None
    outcome: str  # promoted | overridden
    gate: Gate


class Revert(TypedDict):
    edit_id: str
    model_id: str
    reverted_model_id: str | None
    aliases: list[str]
    alias_targets: dict[str, str]
    reverted_at: str | None


class AliasEvent(TypedDict):
    edit_id: str
    model_id: str | None
    previous_model_id: str | None
    verdict: str
    outcome: str
    override_reason: str | None
    actor: str | None
    policy: dict[str, Any]
    at: str


class Alias(TypedDict):
    name: str
    family: str
    model_id: str
    updated_at: str
    history: list[AliasEvent]


class PromotionRecord(TypedDict):
    id: int
    alias: str
    family: str
    edit_id: str
    model_id: str | None
    verdict: str
    outcome: str
    override_reason: str | None
    actor: str | None
    at: str


class Promotions(TypedDict):
    promotions: list[PromotionRecord]


# --- webhooks -------------------------------------------------------------------------------------------------------

WebhookEvent = Literal["edit.succeeded", "edit.failed", "edit.canceled", "audit.completed", "gate.evaluated", "*"]
DeliveryState = Literal["pending", "delivering", "succeeded", "failed"]


class Webhook(TypedDict):
    id: str
    url: str
    events: list[str]
    description: str | None
    created_at: str


class WebhookCreated(Webhook):
    secret: str  # whsec_...: shown only in the create answer; verify webhook-signature with it


class DeliveryAttempt(TypedDict):
    attempt: int
    at: str
    status_code: int | None  # None: no answer (a transport error, a refused host)
    error: str | None


class WebhookDelivery(TypedDict):
    id: str  # the webhook-id header, the same on every retry
    webhook_id: str
    event: str
    status: DeliveryState
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    history: list[DeliveryAttempt]
    payload: dict[str, Any]  # {type, timestamp, data}
    created_at: str
    delivered_at: str | None


# --- client-side results --------------------------------------------------------------------------------------------

class Download(TypedDict):
    """A downloaded object: where it was written, its size and its sha256 (checked against X-Content-SHA256)."""

    path: str | None  # None when written to a file object
    size: int
    sha256: str
