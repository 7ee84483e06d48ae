"""Property tests (hypothesis, derandomized so CI is reproducible): the upload parsers and the gate evaluator, fed
arbitrary and mutated input, either answer or refuse with their own error type — never another exception (which
the API would turn into a 500) — and a verdict is always one of pass / warn / fail."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from editaudit.contracts.formats import (
    DatasetArrays,
    FormatError,
    dataset_to_npz,
    parse_dataset,
    read_safetensors_header,
    scan_dataset,
)
from editaudit.gate.evaluate import GateUsageError, evaluate
from editaudit.gate.policy import Policy, builtin_policy

PROPS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=20)


def _safetensors(header: object, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


VALID = _safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16))


def _header_or_format_error(data: bytes) -> None:
    try:
        header = read_safetensors_header(data)
    except FormatError:
        return
    assert isinstance(header, dict)


@PROPS
@given(st.binary(max_size=256))
def test_any_bytes_are_a_header_or_a_format_error(data):
    _header_or_format_error(data)


@PROPS
@given(st.dictionaries(st.text(max_size=6), JSON, max_size=4), st.binary(max_size=64))
def test_any_json_header_is_a_header_or_a_format_error(header, body):
    _header_or_format_error(_safetensors(header, body))


@PROPS
@given(st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "x"]), JSON, min_size=1, max_size=4),
       st.binary(max_size=64))
def test_tensor_entries_of_any_type_are_a_header_or_a_format_error(entry, body):
    _header_or_format_error(_safetensors({"w": entry}, body))


@PROPS
@given(st.integers(0, len(VALID) - 1), st.integers(0, 255))
def test_a_valid_file_with_one_byte_changed_is_a_header_or_a_format_error(at, value):
    _header_or_format_error(VALID[:at] + bytes([value]) + VALID[at + 1 :])


NPZ = dataset_to_npz(DatasetArrays(x=np.zeros((2, 1, 4, 4), np.float32), y=np.array([0, 1])))


@PROPS
@given(st.integers(0, len(NPZ) - 1), st.binary(min_size=1, max_size=8), st.sampled_from(["d.npz", "d.npy", "d"]))
def test_a_mutated_dataset_is_parsed_or_a_format_error(at, patch, name):
    data = NPZ[:at] + patch + NPZ[at + len(patch) :]
    try:
        parsed = parse_dataset(data, name, max_expanded=1 << 20)
    except FormatError:
        parsed = None
    try:  # the API's streaming scan accepts exactly what the worker's loader accepts, with the same figures
        scanned = scan_dataset(data, name, max_expanded=1 << 20)
    except FormatError:
        scanned = None
    assert (parsed is None) == (scanned is None)
    if parsed is not None:
        assert (scanned.n, scanned.shape, scanned.label_max) == (parsed.n, parsed.shape, int(parsed.y.max()))


METRICS = ["test.accuracy", "test.adv.pgd.accuracy", "edit.accuracy", "test.corruption.mean.accuracy"]
VALUE = st.floats(allow_nan=True, allow_infinity=True) | st.none() | st.floats(0, 1)


@st.composite
def audits(draw):
    metrics = {side: {m: draw(VALUE) for m in draw(st.lists(st.sampled_from(METRICS), unique=True))}
               for side in ("baseline", "candidate")}
    deltas = {m: {"value": draw(VALUE), "n": draw(st.integers(-1, 500)), "n10": draw(st.integers(-1, 50)),
                  "n01": draw(st.integers(-1, 50))} for m in draw(st.lists(st.sampled_from(METRICS), unique=True))}
    return {"metrics": metrics, "deltas": deltas, "config": draw(st.sampled_from([{}, {"attacks": []}])),
            "samples": draw(st.sampled_from([{}, {"test": {"n": 30, "of": 450}}]))}


@PROPS
@given(audits())
def test_the_default_policy_gives_a_verdict_on_any_audit(audit):
    try:
        result = evaluate(audit, builtin_policy("default"), "t", typos_are_usage=False)
    except GateUsageError:
        return
    assert result.verdict in {"pass", "warn", "fail"}


RULE = st.fixed_dictionaries({}, optional={
    "metric": st.sampled_from(METRICS + ["test.acc", "x", ""]), "max_drop": VALUE, "min": VALUE,
    "relative": st.booleans(), "decision": st.sampled_from(["non_inferiority", "significant_drop", "vibes"]),
    "alpha": VALUE, "attack": st.fixed_dictionaries({}, optional={"name": st.text(max_size=5),
                                                                  "min_eps": VALUE})})


@PROPS
@given(st.lists(RULE, min_size=0, max_size=3), audits())
def test_any_policy_document_is_refused_or_gives_a_verdict(rules, audit):
    try:
        policy = Policy.model_validate({"version": 1, "rules": rules})
    except ValidationError:
        return
    try:
        result = evaluate(audit, policy, "t")
    except GateUsageError:
        return
    assert result.verdict in {"pass", "warn", "fail"}
    assert all(math.isfinite(r.bound) for r in result.rules if getattr(r, "bound", None) is not None)
