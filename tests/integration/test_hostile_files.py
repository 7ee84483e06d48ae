"""A corpus of hostile uploads, each refused at the door with a precise 4xx naming the field, nothing stored and
nothing executed: crafted safetensors headers, non-finite weights, pickles in every container, bad masks and
labels, NUL bytes at the edge."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from editaudit.core import db
from tests.conftest import SPEC, unscoped
from tests.image_folders import zip_bytes
from tests.integration.test_api_errors import assert_nothing_stored, assert_problem

MARKER = "/tmp/editaudit-hostile-marker"


class Boom:
    """Unpickling this would create MARKER: the proof that something executed."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def st(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def valid_state(digits_model) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in digits_model[2].state_dict().items()}


def st_from(state: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save(state)


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
SAFETENSORS_CASES = {
    "deep header": struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000,
    "overflowing shape": st({"w": {"dtype": "F32", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 8]}}, b"0" * 8),
    "offsets as strings": st({"w": {**F32, "data_offsets": ["0", "8"]}}, b"0" * 8),
    "offsets as floats": st({"w": {**F32, "data_offsets": [0.0, 8.0]}}, b"0" * 8),
    "shape of booleans": st({"w": {**F32, "shape": [True, True]}}, b"0" * 4),
    "dtype not a string": st({"w": {**F32, "dtype": 4}}, b"0" * 8),
    "extra key": st({"w": {**F32, "extra": 1}}, b"0" * 8),
    "overlapping tensors": st({"a": F32, "b": F32}, b"0" * 8),
    "a hole": st({"a": F32, "b": {**F32, "data_offsets": [16, 24]}}, b"0" * 24),
    "trailing junk": st({"w": F32}, b"0" * 8 + b"junk"),
    "metadata not strings": st({"__metadata__": {"a": 1}, "w": F32}, b"0" * 8),
    "header not an object": st([1, 2], b""),  # type: ignore[arg-type]
    "a pickle stream": pickle.dumps(Boom()),
}


@pytest.fixture(autouse=True)
def no_marker():
    if os.path.exists(MARKER):
        os.remove(MARKER)
    yield
    assert not os.path.exists(MARKER), "something was unpickled"


def post_model(c, data: bytes):
    return c.post("/models", files={"weights": ("m.safetensors", data)}, data={"spec": json.dumps(SPEC)})


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_crafted_checkpoints_are_refused(api_client, case):
    r = post_model(api_client, SAFETENSORS_CASES[case])
    assert r.status_code in (415 if "pickle" in case else 422,), (case, r.status_code, r.text)
    assert_problem(r, r.status_code, "weights")
    assert_nothing_stored(api_client)


def test_torch_save_with_a_payload_is_refused_unread(api_client):
    buf = io.BytesIO()
    torch.save({"w": Boom()}, buf)
    assert_problem(post_model(api_client, buf.getvalue()), 415, "weights")


def test_non_finite_weights_are_refused(api_client, digits_model):
    for bad in (np.nan, np.inf):
        state = valid_state(digits_model)
        state["fc.weight"][0, 0] = bad
        body = assert_problem(post_model(api_client, st_from(state)), 422, "weights")
        assert "'fc.weight'" in body["detail"] and "NaN or infinity" in body["detail"]
    assert_nothing_stored(api_client)
    assert post_model(api_client, st_from(valid_state(digits_model))).status_code == 201, "the clean twin passes"


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


X, Y = np.zeros((2, 1, 8, 8), np.float32), np.array([0, 1], np.int64)
DATASET_CASES = {
    "object member (pickle)": (npz(x=X, y=np.array([Boom(), 1], dtype=object)), 415, "file"),
    "npy member that is a pickle": (None, 422, "file"),
    "member that is not .npy": (None, 422, "file"),
    "mask of NaN": (npz(x=X, y=Y, mask=np.full((2, 1, 8, 8), np.nan, np.float32)), 422, "file.mask"),
    "mask of strings": (npz(x=X, y=Y, mask=np.full((2, 1, 8, 8), "a")), 422, "file.mask"),
    "mask above one": (npz(x=X, y=Y, mask=np.full((2, 1, 8, 8), 3.0, np.float32)), 422, "file.mask"),
    "negative label": (npz(x=X, y=np.array([0, -1])), 422, "file.y"),
    "float labels": (npz(x=X, y=np.array([0.0, 1.0])), 422, "file.y"),
    "uint64 labels": (npz(x=X, y=np.array([0, 2**63], np.uint64)), 422, "file.y"),
    "x out of range": (npz(x=X + 2, y=Y), 422, "file.x"),
    "safetensors with a hole": (st({"x": F32, "y": {**F32, "data_offsets": [16, 24]}}, b"0" * 24), 422, "file"),
    "a pickle stream": (pickle.dumps(Boom()), 415, "file"),
}


DATASET_CASES["npy member that is a pickle"] = (zip_bytes({"x.npy": pickle.dumps(Boom()), "y.npy": b""}), 422, "file")
DATASET_CASES["member that is not .npy"] = (zip_bytes({"x.npy": b"", "../evil": b""}), 422, "file")


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_crafted_datasets_are_refused(api_client, case):
    data, status, field = DATASET_CASES[case]
    assert_problem(api_client.post("/datasets", files={"file": ("d.npz", data)}), status, field)
    assert_nothing_stored(api_client)


def test_labels_use_the_whole_int64_range(api_client):
    r = api_client.post("/datasets", files={"file": ("d.npz", npz(x=X, y=np.array([0, 2**40], np.int64)))})
    assert r.status_code == 201, r.text
    with unscoped(api_client.services.sessions)() as s:
        assert s.get(db.Dataset, r.json()["id"]).label_max == 2**40


def test_nul_bytes_are_refused_at_the_edge(api_client):
    assert_problem(api_client.get("/models/abc%00def"), 422, "url")
    assert_problem(api_client.get("/promotions", params={"edit_id": "a\x00b"}), 422, "url")
    r = api_client.post("/policies", content=b'{"name": "p\\u0000", "policy": {}}',
                        headers={"content-type": "application/json"})
    assert_problem(r, 422, "body")
    r = api_client.post("/policies", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                        headers={"content-type": "application/json"})
    assert_problem(r, 413, "body")
    assert api_client.get("/healthz").status_code == 200


def _redeclared(data: bytes, key: str, dtype: str) -> bytes:
    """The same safetensors bytes with one tensor's declared dtype changed (to one of the same width)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header[key]["dtype"] = dtype
    return st(header, data[8 + n :])


@pytest.mark.parametrize("key,dtype", [("fc.weight", "I32"), ("features.1.num_batches_tracked", "F64"),
                                       ("features.1.running_var", "BOOL")])
def test_a_tensor_of_the_wrong_kind_of_dtype_is_refused(api_client, digits_model, key, dtype):
    """A float32 weight declared int32 has the right size and shape: only its dtype says the bytes would be read as
    integers (and loaded as garbage). Refused at upload, naming the tensor and what it should be."""
    state = valid_state(digits_model)
    if dtype == "BOOL":  # 1-byte: give it a tensor of matching size
        state[key] = np.zeros(state[key].shape, np.uint8)
    body = assert_problem(post_model(api_client, _redeclared(st_from(state), key, dtype)), 422, "weights")
    assert f"'{key}' is {dtype}" in body["detail"], body
    assert ("float" if key != "features.1.num_batches_tracked" else "int") in body["detail"]
    assert_nothing_stored(api_client)


def test_a_checkpoint_of_other_widths_of_the_right_kind_is_accepted(api_client, digits_model):
    """The check is the dtype's kind, not its width: float16 weights and an int32 counter load fine."""
    state = valid_state(digits_model)
    state = {k: v.astype(np.float16) if v.dtype == np.float32 else v.astype(np.int32) for k, v in state.items()}
    assert post_model(api_client, st_from(state)).status_code == 201


HUNDRED_MIB = 100 * 1024 * 1024


def _hundred_mib_header() -> bytes:
    """A checkpoint whose JSON header is 100 MiB of empty lists: valid JSON that json.loads turns into ~25 bytes of
    Python objects per 3 bytes of text (the old parser: 1.27 GB and 22 s per request)."""
    inner = HUNDRED_MIB - len(b'{"w":[]}')
    raw = b'{"w":[' + b"[]," * (inner // 3 - 1) + b"[]" + b" " * (inner % 3 + 1) + b"]}"
    raw = raw[: HUNDRED_MIB - 2] + b"]}"
    assert len(raw) == HUNDRED_MIB
    return struct.pack("<Q", len(raw)) + raw + bytes(8)


def _peak_rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the API process's peak RSS from /proc")
def test_a_100_mib_header_is_refused_in_bounded_memory_and_time(tmp_path):
    """The API in its own process (uvicorn), so its peak RSS is its own: two concurrent uploads whose header claims
    100 MiB are refused (422, before the header is read: the limit is 8 MiB) with the peak growing by far less than
    one old parse (1.27 GB), each within seconds."""
    import subprocess
    import sys
    import threading
    import time

    import httpx

    from editaudit.cli.embedded import free_port
    from editaudit.core.migrate import upgrade
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    upgrade(settings.resolved_database_url)
    token = "hostile-header-test-" + "x" * 24
    port = free_port()
    env = {**os.environ, "EDITAUDIT_DATA_DIR": str(tmp_path), "EDITAUDIT_API_TOKEN": token,
           "EDITAUDIT_QUEUE": settings.queue}
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "editaudit.service.app:app", "--host", "127.0.0.1",
                            "--port", str(port), "--log-level", "warning"], env=env)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        small = st({"w": F32}, b"0" * 8)  # warm up the upload path: multipart, the parser, the manifest
        spec = {"spec": json.dumps(SPEC)}
        assert httpx.post(f"{url}/models", files={"weights": ("m.safetensors", small)}, data=spec, headers=headers,
                          timeout=60).status_code == 422
        before = _peak_rss_kib(api.pid)
        data = _hundred_mib_header()
        answers: list = []

        def upload():
            start = time.monotonic()
            r = httpx.post(f"{url}/models", files={"weights": ("m.safetensors", data)}, data=spec, headers=headers,
                           timeout=120)
            answers.append((r, time.monotonic() - start))

        threads = [threading.Thread(target=upload) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        grown_mib = (_peak_rss_kib(api.pid) - before) / 1024
    finally:
        api.terminate()
        api.wait(timeout=30)
    assert len(answers) == 2
    for r, seconds in answers:
        body = assert_problem(r, 422, "weights")
        assert f"{HUNDRED_MIB} bytes" in body["detail"] and "at most 8388608" in body["detail"], body
        assert seconds < 30, f"{seconds:.1f} s to refuse (sending 100 MiB included)"
    assert grown_mib < 200, f"the API's peak RSS grew by {grown_mib:.0f} MiB for two 100 MiB headers"
