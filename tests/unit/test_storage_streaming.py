"""Streaming writes to the object store and chunked hashing: large objects go from a file to the store without
sitting in memory, keep the store's "created by this call" answer, and land atomically."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from editaudit.core.storage import LocalStore, S3Store, content_key, sha256_file


def _blob(n: int) -> bytes:
    return os.urandom(n)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_sha256_file_matches_the_whole_digest_for_any_chunk(tmp_path, chunk):
    data = _blob(50_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path, chunk) == (hashlib.sha256(data).hexdigest(), len(data))
    f = io.BytesIO(data)
    f.read(10)  # a file object is hashed from its start, whatever its position
    assert sha256_file(f, chunk) == (hashlib.sha256(data).hexdigest(), len(data))


def test_local_put_file_from_a_path_and_a_file_object(tmp_path):
    store = LocalStore(tmp_path / "objects")
    data = _blob(3 * 1024 * 1024 + 5)
    src = tmp_path / "upload"
    src.write_bytes(data)
    key = content_key("models", hashlib.sha256(data).hexdigest(), ".safetensors")
    assert store.put_file(key, src) is True
    assert store.get(key) == data
    assert store.put_file(key, io.BytesIO(data)) is False, "an existing object is not created again"
    assert store.put(key, data) is False
    assert not [p for p in (tmp_path / "objects").rglob(".tmp-*")], "no temporary file left beside the object"


def test_local_put_file_that_fails_midway_leaves_nothing(tmp_path):
    store = LocalStore(tmp_path / "objects")

    class Broken(io.BytesIO):
        def read(self, *a):
            if self.tell() > 0:
                raise OSError("disk went away")
            return super().read(*a)

    with pytest.raises(OSError):
        store.put_file("datasets/ab/x.npz", Broken(_blob(10 * 1024 * 1024)))
    assert not store.exists("datasets/ab/x.npz")
    assert not list((tmp_path / "objects").rglob("*.npz")) and not list((tmp_path / "objects").rglob(".tmp-*"))


def test_s3_put_file_goes_up_in_parts_above_the_threshold(s3_server, tmp_path):
    endpoint, bucket = s3_server
    store = S3Store(bucket, "streaming", endpoint_url=endpoint, multipart_threshold=5 * 1024 * 1024,
                    part_size=5 * 1024 * 1024)
    parts = []
    store.client.meta.events.register("before-send.s3.UploadPart", lambda **kw: parts.append(1))
    data = _blob(12 * 1024 * 1024 + 3)  # three parts: S3's minimum part is 5 MiB
    assert store.put_file("big", io.BytesIO(data)) is True
    assert len(parts) == 3, "multipart: 5 + 5 + 2 MiB"
    assert store.get("big") == data
    assert store.put_file("big", io.BytesIO(data)) is False

    path = tmp_path / "small"
    path.write_bytes(b"small object")
    assert store.put_file("small", path) is True and store.get("small") == b"small object"
    assert len(parts) == 3, "below the threshold: one PUT"


def _stream_roundtrip(store, data: bytes) -> None:
    key = content_key("models", hashlib.sha256(data).hexdigest(), ".safetensors")
    store.put(key, data)
    size, chunks = store.stream(key, chunk=1 << 16)
    parts = list(chunks)
    assert size == len(data) and b"".join(parts) == data and max(map(len, parts)) <= 1 << 16
    with pytest.raises(KeyError):
        store.stream("models/" + "0" * 64 + ".safetensors")


def test_downloads_stream_in_bounded_chunks_local(tmp_path):
    _stream_roundtrip(LocalStore(tmp_path / "objects"), _blob(300_001))


def test_downloads_stream_in_bounded_chunks_s3(s3_server):
    endpoint, bucket = s3_server
    _stream_roundtrip(S3Store(bucket, "stream-test", endpoint_url=endpoint), _blob(300_001))


def test_downloaded_streams_an_object_to_a_temporary_file_and_removes_it(tmp_path):
    from editaudit.core.storage import downloaded

    store = LocalStore(tmp_path / "objects")
    data = _blob(2 * 1024 * 1024 + 3)
    key = content_key("datasets", hashlib.sha256(data).hexdigest(), ".npz")
    store.put(key, data)
    with downloaded(store, key, ".npz") as path:
        assert path.suffix == ".npz" and path.read_bytes() == data
    assert not path.exists()
    with pytest.raises(KeyError):
        with downloaded(store, "datasets/" + "0" * 64 + ".npz"):
            pass


def test_a_directory_store_raises_only_the_stores_two_faults(tmp_path):
    """A missing object is ObjectMissing (a KeyError, as always); a directory that cannot be used (here a file where
    it should be, as an unmounted volume) is StoreUnavailable on every call that reaches it."""
    from editaudit.core.storage import ObjectMissing, StoreUnavailable

    root = tmp_path / "objects"
    store = LocalStore(root)
    for call in (store.get, store.stream):
        with pytest.raises(ObjectMissing) as missing:
            call("models/ab/x")
        assert isinstance(missing.value, KeyError) and "models/ab/x" in str(missing.value)
    store.put("models/ab/x", b"data")
    root.rename(tmp_path / "away")
    root.write_bytes(b"")
    for call in (lambda: store.get("models/ab/x"), lambda: store.stream("models/ab/x"),
                 lambda: store.put("models/cd/y", b"1"), lambda: store.put_file("models/cd/y", io.BytesIO(b"1")),
                 lambda: store.delete("models/ab/x")):
        with pytest.raises(StoreUnavailable):
            call()


def test_an_s3_store_raises_only_the_stores_two_faults(s3_server):
    from editaudit.core.storage import ObjectMissing, StoreUnavailable

    endpoint, bucket = s3_server
    store = S3Store(bucket, "faults", endpoint_url=endpoint)
    for call in (store.get, store.stream):
        with pytest.raises(ObjectMissing):
            call("nope")
    assert store.exists("nope") is False
    # refused (NoSuchBucket): not a missing object. (HEAD answers a bare 404 either way: exists() says False)
    elsewhere = S3Store("no-such-bucket", endpoint_url=endpoint, attempts=1)
    for call in (lambda: elsewhere.get("k"), lambda: elsewhere.stream("k"), lambda: elsewhere.put("k", b"1")):
        with pytest.raises(StoreUnavailable):
            call()
