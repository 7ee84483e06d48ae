"""Job states (edits and audits share them) and the outcomes the gate and promotions record."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


class IngestStatus(StrEnum):
    """A model or dataset upload: usable (`ready`), being checked by a worker (`validating`: timm and Hugging Face
    checkpoints, image-folder archives), or refused by that check (`invalid`, with the reason)."""

    validating = "validating"
    ready = "ready"
    invalid = "invalid"


ACTIVE = frozenset({Status.queued, Status.running})  # a worker may still pick it up or finish it
TERMINAL = frozenset({Status.succeeded, Status.failed, Status.canceled})


class Verdict(StrEnum):
    passed = "pass"
    warn = "warn"
    fail = "fail"
    none = "none"  # a revert: no gate was run


class PromotionOutcome(StrEnum):
    promoted = "promoted"
    overridden = "overridden"
    refused = "refused"
    reverted = "reverted"
