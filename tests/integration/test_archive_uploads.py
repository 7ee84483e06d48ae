"""Image-folder archives at the API: every hostile or malformed archive is a 422 naming the member, and nothing is
stored (no row, no object); the API process decodes nothing (neither torch nor Pillow is imported to check one)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
import zlib

import pytest

from editaudit.core import db
from tests.conftest import unscoped
from tests.image_folders import folder_members, tar_bytes


@pytest.fixture()
def app_settings_extra() -> dict:
    return {"archive_max_members": 50, "archive_max_expanded_mb": 2}


def _tar_with(entries: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, payload in folder_members(["a", "b"], 2).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for info in entries:
            payload = (data or {}).get(info.name, b"")
            info.size = len(payload) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(payload) if payload else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _huge_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda tag, body: struct.pack(">I", len(body)) + tag + body + struct.pack(  # noqa: E731
        ">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _truncated_png() -> bytes:
    good = folder_members(["a"], 1)["a/0000.png"]
    return good[: len(good) // 2]


HOSTILE = {
    "traversal": (lambda: _tar_with([_info("a/../../evil.png")], {"a/../../evil.png": b"x"}), "evil.png"),
    "absolute": (lambda: _tar_with([_info("/etc/evil.png")], {"/etc/evil.png": b"x"}), "/etc/evil.png"),
    "symlink": (lambda: _tar_with([_info("a/link.png", tarfile.SYMTYPE, "/etc/passwd")]), "a/link.png"),
    "hardlink": (lambda: _tar_with([_info("a/hard.png", tarfile.LNKTYPE, "a/0000.png")]), "a/hard.png"),
    "device": (lambda: _tar_with([_info("a/dev.png", tarfile.CHRTYPE)]), "a/dev.png"),
    "pixel bomb": (lambda: _tar_with([_info("a/bomb.png")], {"a/bomb.png": _huge_png(100_000, 100_000)}),
                   "a/bomb.png"),
    "truncated": (lambda: _tar_with([_info("b/cut.png")], {"b/cut.png": _truncated_png()}), "b/cut.png"),
    "not an image": (lambda: _tar_with([_info("b/fake.png")], {"b/fake.png": b"#!/bin/sh\nrm -rf /\n"}), "b/fake.png"),
    "mixed sizes": (lambda: tar_bytes({**folder_members(["a"], 2), **{
        k.replace("0000", "big"): v for k, v in folder_members(["a"], 1, size=48).items()}}), "a/big.png"),
    "empty class": (lambda: _tar_with([_info("empty", tarfile.DIRTYPE)]), "empty"),
    "too many members": (lambda: tar_bytes(folder_members(["a"], 60, size=8)), "a/00"),
    "expansion bomb": (lambda: tar_bytes({**folder_members(["a"], 1), "a/zeros.png": b"\0" * (8 * 1024 * 1024)},
                                         gz=True), "a/zeros.png"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_naming_the_member_and_nothing_is_stored(api_client, case):
    make, member = HOSTILE[case]
    r = api_client.post("/datasets", files={"file": ("images.tar" if b"ustar" in make()[:512] else "images.tar.gz",
                                                     make())})
    assert r.status_code == 422, r.text
    body = r.json()
    assert member in body["detail"], body["detail"]
    assert body["errors"][0]["field"].startswith("file")
    with unscoped(api_client.services.sessions)() as s:
        assert s.query(db.Dataset).count() == 0
    assert not list((api_client.settings.data_dir).rglob("*.tar*")), "an archive object was left behind"


def test_valid_archive_is_validating_until_a_worker_decodes_it(api_client):
    r = api_client.post("/datasets", files={"file": ("images.tar", tar_bytes(folder_members(["ant", "bee"], 3)))})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["status"] == "validating" and ds["n"] == 6 and ds["classes"] == ["ant", "bee"]
    assert ds["shape"] == [3, 32, 32] and ds["progress"]["total"] == 6
    # an edit naming it waits: 409 with Retry-After, not a failed job later
    model = api_client.post("/models", files={"weights": ("m.safetensors", _smallcnn_weights())}, data={
        "spec": '{"arch": "editaudit/smallcnn", "num_classes": 2, "input_shape": [3, 32, 32]}'}).json()
    r = api_client.post("/edits", json={"model_id": model["id"], "method": "finetune", "edit_set": ds["id"],
                                        "test_set": ds["id"]})
    assert r.status_code == 409 and "validating" in r.json()["detail"] and r.headers["Retry-After"]
    # options are checked before anything is stored
    r = api_client.post("/datasets", files={"file": ("images.tar", tar_bytes(folder_members(["ant"], 1)))},
                        data={"options": '{"class_to_idx": {"bee": 0}}'})
    assert r.status_code == 422 and "ant" in r.json()["detail"]


def _smallcnn_weights() -> bytes:
    import safetensors.torch

    from editaudit.worker.ml.archs import build_inner

    net = build_inner("editaudit/smallcnn", 2, [3, 32, 32])
    return safetensors.torch.save({k: v.contiguous() for k, v in net.state_dict().items()})


def test_the_api_process_decodes_nothing(tmp_path):
    """Checking an archive (a good one, a bad one) imports neither torch nor an image decoder in the API process."""
    (tmp_path / "good.tar").write_bytes(tar_bytes(folder_members(["a", "b"], 2)))
    (tmp_path / "bad.tar").write_bytes(tar_bytes({"a/x.png": b"not a png"}))
    code = f"""
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from editaudit.core.migrate import upgrade
from editaudit.core.settings import Settings
from editaudit.service.app import create_app
folder = Path({str(tmp_path)!r})
settings = Settings(data_dir=folder)
upgrade(settings.resolved_database_url)
with TestClient(create_app(settings, allow_anonymous=True)) as c:
    assert c.post("/datasets", files={{"file": ("x.tar", (folder / "good.tar").read_bytes())}}).status_code == 201
    assert c.post("/datasets", files={{"file": ("y.tar", (folder / "bad.tar").read_bytes())}}).status_code == 422
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "PIL", "timm", "transformers"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _shard(n: int, label: int, size: int = 8) -> bytes:
    import numpy as np
    import safetensors.numpy

    rng = np.random.default_rng(label)
    return safetensors.numpy.save({"x": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                                   "y": np.full(n, label, dtype=np.int64)})


def test_several_tensor_shards_are_one_dataset(api_client):
    import numpy as np

    files = [("file", (f"part{i}.safetensors", _shard(3 + i, i))) for i in range(3)]
    r = api_client.post("/datasets", files=files)
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["status"] == "ready" and ds["n"] == 3 + 4 + 5 and ds["shape"] == [3, 8, 8]
    with unscoped(api_client.services.sessions)() as s:
        manifest = s.get(db.Dataset, ds["id"]).manifest
    assert [shard["n"] for shard in manifest["shards"]] == [3, 4, 5]
    assert all(api_client.services.store.exists(shard["key"]) for shard in manifest["shards"])
    assert api_client.post("/datasets", files=files).status_code == 200  # the same shards again: the same dataset
    # shards that disagree (another image size), or that are not in the shard layout, store nothing
    r = api_client.post("/datasets", files=[files[0], ("file", ("odd.safetensors", _shard(2, 0, size=16)))])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file.1"
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((2, 3, 8, 8), np.float32), y=np.zeros(2, np.int64))
    r = api_client.post("/datasets", files=[files[0], ("file", ("f.npz", buf.getvalue()))])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file.1"
