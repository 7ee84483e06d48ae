"""The ingest job in process (the Celery task's body) against the API's rows: an archive becomes `ready` with shards
under the dataset's own keys, or `invalid` naming the member with its shards gone; a check that keeps dying ends
`invalid` after max_attempts instead of being sent again forever; a model that does not fit is `invalid`."""

from __future__ import annotations

import struct
import zlib
from functools import partial

import pytest

from editaudit.contracts.statuses import IngestStatus
from editaudit.core import db
from editaudit.worker.jobs.ingest import ingest_dataset, ingest_model, run_ingest
from tests.conftest import unscoped
from tests.image_folders import folder_members, tar_bytes


def _upload(api_client, members: dict[str, bytes], **data) -> dict:
    r = api_client.post("/datasets", files={"file": ("images.tar", tar_bytes(members))}, data=data)
    assert r.status_code == 201, r.text
    return r.json()


def _row(api_client, table, row_id):
    with unscoped(api_client.services.sessions)() as s:
        row = s.get(table, row_id)
        s.expunge(row)
        return row


def _corrupt_idat(png: bytes) -> bytes:
    """A PNG whose structure (and so its header check) is whole but whose image data does not inflate."""
    i = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[i: i + 4])[0]
    body = b"\x00" * length
    return png[: i + 8] + body + struct.pack(">I", zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF) + png[i + 12 + length:]


def test_an_archive_becomes_shards_under_its_own_keys(api_client):
    c = api_client
    ds = _upload(c, folder_members(["ant", "bee"], 5), options='{"resize": 16}')
    run_ingest(c.settings, "datasets", ds["id"])
    row = _row(c, db.Dataset, ds["id"])
    assert row.status == IngestStatus.ready and row.n == 10 and row.shape == [3, 16, 16]
    assert row.classes == ["ant", "bee"] and row.label_max == 1
    keys = [shard["key"] for shard in row.manifest["shards"]]
    assert keys and all(k.startswith(f"datasets/{ds['id']}/shards/") and c.services.store.exists(k) for k in keys)
    run_ingest(c.settings, "datasets", ds["id"])  # a redelivery of a finished job writes nothing
    assert _row(c, db.Dataset, ds["id"]).manifest == row.manifest
    assert c.get(f"/datasets/{ds['id']}").json()["progress"]["done"] == 10


def test_a_member_that_does_not_decode_makes_it_invalid_and_leaves_no_shard(api_client, monkeypatch):
    c = api_client
    members = folder_members(["ant", "bee"], 40, size=64)
    members["bee/0039.png"] = _corrupt_idat(members["bee/0039.png"])  # the last member: shards exist by then
    ds = _upload(c, members)
    stored = set(c.settings.data_dir.rglob("*.safetensors"))
    from editaudit.worker.jobs import ingest as job

    monkeypatch.setattr(job, "decode_to_shards", partial(job.decode_to_shards, shard_bytes=64 * 64 * 3 * 8))
    run_ingest(c.settings, "datasets", ds["id"])  # several shards are stored before the bad member
    row = _row(c, db.Dataset, ds["id"])
    assert row.status == IngestStatus.invalid and "bee/0039.png" in row.error and row.manifest is None
    assert set(c.settings.data_dir.rglob("*.safetensors")) == stored, "a shard of the invalid dataset was left"
    r = c.post("/edits", json={"model_id": "x", "method": "finetune", "edit_set": ds["id"], "test_set": ds["id"]})
    assert r.status_code == 404  # the model is unknown first; the dataset's own 409 is below
    assert c.get(f"/datasets/{ds['id']}").json()["error"] == row.error


def test_a_check_that_never_finishes_ends_invalid(api_client, monkeypatch):
    c = api_client
    ds = _upload(c, folder_members(["ant"], 2))
    from editaudit.worker.jobs import ingest as job

    def dies(*args, **kwargs):
        raise MemoryError("killed")

    monkeypatch.setattr(job, "decode_to_shards", dies)
    for _ in range(c.settings.max_attempts):
        with pytest.raises(MemoryError):
            ingest_dataset(c.settings, *_services(c), ds["id"])
        assert _row(c, db.Dataset, ds["id"]).status == IngestStatus.validating
    ingest_dataset(c.settings, *_services(c), ds["id"])
    row = _row(c, db.Dataset, ds["id"])
    assert row.status == IngestStatus.invalid and "never finished" in row.error


def test_a_timm_checkpoint_that_does_not_fit_is_invalid_naming_the_tensor(api_client):
    import safetensors.torch
    import timm
    import torch

    c = api_client
    state = timm.create_model("test_resnet", pretrained=False, num_classes=3).state_dict()
    state["fc.weight"] = torch.zeros(3, 7)
    r = c.post("/models", files={"weights": ("m.safetensors", safetensors.torch.save(state))},
               data={"spec": '{"arch": "timm/test_resnet", "num_classes": 3, "input_shape": [3, 32, 32]}'})
    assert r.status_code == 201 and r.json()["status"] == "validating", r.text
    ingest_model(c.settings, *_services(c), r.json()["id"])
    model = c.get(f"/models/{r.json()['id']}").json()
    assert model["status"] == "invalid" and "fc.weight" in model["error"]
    assert c.get(f"/models/{model['id']}/layers").status_code == 409


def _services(c):
    return unscoped(c.services.sessions), c.services.store
