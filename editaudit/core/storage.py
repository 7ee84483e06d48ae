"""Content-addressed object store: a local directory or any S3-compatible server (AWS, MinIO, moto).

Two faults, whichever the store: `StoreUnavailable` (it cannot be used now) and `ObjectMissing` (no object under
the key). Nothing else escapes a store's methods, so the API maps the first to 503 with Retry-After and the second to
an integrity fault, and a worker tells a store outage from a bug."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol, TypeAlias
from urllib.parse import unquote, urlparse

FileSource: TypeAlias = str | os.PathLike[str] | BinaryIO
HASH_CHUNK = 4 * 1024 * 1024
STREAM_CHUNK = 1024 * 1024


class StoreUnavailable(OSError):
    """The store cannot be used now: it did not answer (connection refused or reset, a timeout), answered with an
    error other than "no such object" after the retries (5xx, throttling, access denied, no such bucket), a stream
    broke off mid-object, or a directory store failed to read or write (permissions, a disk error, a missing mount).
    Transient or an operator's to fix, never the request's: the API answers 503 with Retry-After. An OSError, as the
    I/O failure it is."""


class ObjectMissing(KeyError):
    """No object under the key: a KeyError, as the protocol has always raised for one. Behind a row that names the
    object it is an integrity fault (a store restored from an older backup, a bucket moved): the API answers 503 and
    logs it; a duplicate upload puts the object back."""

    def __str__(self) -> str:
        return f"no object {self.args[0]!r} in the store" if self.args else "no such object"


class ObjectStore(Protocol):
    """Every method raises StoreUnavailable when the store cannot be used; get and stream raise ObjectMissing for a
    missing key."""

    def put(self, key: str, data: bytes) -> bool:
        """Store `data` under `key`; returns True when this call created the object (False: it already existed)."""

    def put_file(self, key: str, src: FileSource) -> bool:
        """Like put, streamed from a path or a binary file (read from its start): large objects never sit in memory
        whole."""

    def get(self, key: str) -> bytes: ...

    def stream(self, key: str, chunk: int = STREAM_CHUNK) -> tuple[int, Iterator[bytes]]:
        """(size, chunks) of an object, for downloads that must not hold it in memory; ObjectMissing (a KeyError) when
        missing and StoreUnavailable when the store does not answer, both raised here, before the first chunk; the
        chunks raise StoreUnavailable if the store fails mid-object (never a silently short object)."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def _reading(src: FileSource) -> Iterator[BinaryIO]:
    """A binary file at its start: a path is opened (and closed), a file object is rewound (and left open)."""
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            yield f
    else:
        src.seek(0)
        yield src


def sha256_file(src: FileSource, chunk: int = HASH_CHUNK) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a file, read in `chunk`-byte pieces into one reused buffer."""
    h, size = hashlib.sha256(), 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    with _reading(src) as f:
        while k := f.readinto(buf):  # type: ignore[attr-defined]  # BinaryIO does not declare it; every file has it
            h.update(view[:k])
            size += k
    return h.hexdigest(), size


@contextmanager
def downloaded(store: ObjectStore, key: str, suffix: str = "") -> Iterator[Path]:
    """The object streamed into a temporary file, removed afterwards: a reader parses or memory-maps the file
    instead of holding the object's bytes next to what it builds from them (a 2 GiB dataset needs 2 GiB, not 4)."""
    fd, name = tempfile.mkstemp(prefix="editaudit-", suffix=suffix)
    os.close(fd)
    try:
        yield download_to(store, key, Path(name))
    finally:
        os.unlink(name)


def download_to(store: ObjectStore, key: str, path: Path) -> Path:
    """The object streamed into `path` (created or truncated), chunk by chunk."""
    _, chunks = store.stream(key)
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    return path


def content_key(kind: str, digest: str, suffix: str) -> str:
    """`models/ab/abcdef….safetensors`: the key is the content's sha256, so identical uploads share one object."""
    return f"{kind}/{digest[:2]}/{digest}{suffix}"


@contextmanager
def _local_faults(what: str, key: str, missing: bool = True) -> Iterator[None]:
    """A directory store's OSErrors as the store's faults: a missing file is ObjectMissing where `missing` (a read),
    anything else (permissions, a disk error, a path through a file) StoreUnavailable."""
    try:
        yield
    except StoreUnavailable:
        raise
    except FileNotFoundError as e:
        if missing:
            raise ObjectMissing(key) from None
        raise StoreUnavailable(f"the store's directory could not {what} {key!r}: {e}") from e
    except OSError as e:
        raise StoreUnavailable(f"the store's directory could not {what} {key!r}: {e}") from e


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise ValueError(f"object key escapes the store: {key!r}")
        return p

    def put(self, key: str, data: bytes) -> bool:
        with _local_faults("write", key, missing=False):
            return self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, src: FileSource) -> bool:
        def copy(dst: BinaryIO) -> None:
            with _reading(src) as f:
                shutil.copyfileobj(f, dst, HASH_CHUNK)

        with _local_faults("write", key, missing=False):
            return self._write(key, copy)

    def _write(self, key: str, fill) -> bool:
        """Write a temporary file beside the object, then publish it atomically: readers never see half an object,
        and of two writers of one key exactly one creates it (a hard link fails when the name exists)."""
        path = self._path(key)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # a filesystem without hard links: the atomic rename still holds readers safe
                os.replace(tmp, path)
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        with _local_faults("read", key):
            return self._path(key).read_bytes()

    def stream(self, key: str, chunk: int = STREAM_CHUNK) -> tuple[int, Iterator[bytes]]:
        with _local_faults("read", key):
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
            size = os.fstat(f.fileno()).st_size

        def chunks() -> Iterator[bytes]:
            with f, _local_faults("read", key, missing=False):
                while block := f.read(chunk):
                    yield block

        return size, chunks()

    def exists(self, key: str) -> bool:
        with _local_faults("look up", key, missing=False):
            return self._path(key).exists()

    def delete(self, key: str) -> None:
        with _local_faults("delete", key, missing=False):
            self._path(key).unlink(missing_ok=True)


_S3_MISSING = {"404", "NoSuchKey", "NotFound"}


@contextmanager
def _s3_faults(what: str, key: str, missing: bool = True) -> Iterator[None]:
    """botocore's and boto3's errors as the store's faults: "no such key" is ObjectMissing where `missing` (a read),
    anything else (no connection, a timeout, a 5xx or throttling after the retries, access denied, no such bucket, a
    body cut off mid-object) StoreUnavailable."""
    import urllib3.exceptions
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except StoreUnavailable:
        raise
    except ClientError as e:
        if missing and e.response.get("Error", {}).get("Code") in _S3_MISSING:
            raise ObjectMissing(key) from None
        raise StoreUnavailable(f"the object store refused to {what} {key!r}: {e}") from e
    except (BotoCoreError, Boto3Error, urllib3.exceptions.HTTPError, OSError) as e:
        raise StoreUnavailable(f"the object store could not {what} {key!r}: {e}") from e


class S3Store:
    """S3 or an S3-compatible server. Transient errors (connection refused or reset, throttling, 5xx) are retried
    by botocore's standard mode with jittered exponential backoff, `attempts` tries in all; then they raise
    StoreUnavailable."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str = "us-east-1",
                 attempts: int = 6, multipart_threshold: int = 64 * 1024 * 1024, part_size: int = 8 * 1024 * 1024):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        config = Config(retries={"mode": "standard", "max_attempts": attempts}, connect_timeout=5, read_timeout=60)
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        # above the threshold an object goes up in parts; a file object's parts are read into memory, at most
        # `max_in_memory_upload_chunks` of them at once: 4 x 8 MiB bounds the API's memory whatever the object's size
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=part_size,
                                       max_concurrency=4)
        self.transfer.max_in_memory_upload_chunks = 4  # s3transfer's setting; boto3's constructor does not take it

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with _s3_faults("look up", key, missing=False):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return True
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in _S3_MISSING:
                    return False
                raise

    def put(self, key: str, data: bytes) -> bool:
        if self.exists(key):
            return False
        with _s3_faults("write", key, missing=False):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ChecksumAlgorithm="SHA256")
        return True

    def put_file(self, key: str, src: FileSource) -> bool:
        if self.exists(key):
            return False
        extra = {"ChecksumAlgorithm": "SHA256"}
        with _s3_faults("write", key, missing=False):
            if isinstance(src, (str, os.PathLike)):  # parts read lazily from the file
                self.client.upload_file(os.fspath(src), self.bucket, self._key(key), Config=self.transfer,
                                        ExtraArgs=extra)
                return True
            with _reading(src) as f:
                self.client.upload_fileobj(f, self.bucket, self._key(key), Config=self.transfer, ExtraArgs=extra)
        return True

    def get(self, key: str) -> bytes:
        with _s3_faults("read", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def stream(self, key: str, chunk: int = STREAM_CHUNK) -> tuple[int, Iterator[bytes]]:
        with _s3_faults("read", key):
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        body = obj["Body"]

        def chunks() -> Iterator[bytes]:  # botocore checks the length at the end: a short body raises, never ends
            with _s3_faults("read", key, missing=False):
                try:
                    yield from body.iter_chunks(chunk)
                finally:
                    body.close()

        return obj["ContentLength"], chunks()

    def delete(self, key: str) -> None:
        with _s3_faults("delete", key, missing=False):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def store_from_url(url: str, endpoint_url: str | None = None, region: str = "us-east-1") -> ObjectStore:
    u = urlparse(url)
    if u.scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file store URLs are absolute: file:///path, got {url!r}")
        return LocalStore(Path(unquote(u.path)))
    if u.scheme == "s3":
        return S3Store(u.netloc, u.path, endpoint_url=endpoint_url, region=region)
    raise ValueError(f"unsupported store URL {url!r}: use file:///path or s3://bucket[/prefix]")
