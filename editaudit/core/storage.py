"""Content-addressed object store: a local directory or any S3-compatible server (AWS, MinIO, moto)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol, Union
from urllib.parse import unquote, urlparse

FileSource = Union[str, os.PathLike, BinaryIO]
HASH_CHUNK = 4 * 1024 * 1024
STREAM_CHUNK = 1024 * 1024


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> bool:
        """Store `data` under `key`; returns True when this call created the object (False: it already existed)."""

    def put_file(self, key: str, src: FileSource) -> bool:
        """Like put, streamed from a path or a binary file (read from its start): large objects never sit in memory
        whole."""

    def get(self, key: str) -> bytes: ...

    def stream(self, key: str, chunk: int = STREAM_CHUNK) -> tuple[int, Iterator[bytes]]:
        """(size, chunks) of an object, for downloads that must not hold it in memory; KeyError when missing
        (raised here, before the first chunk)."""

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
        while k := f.readinto(buf):
            h.update(view[:k])
            size += k
    return h.hexdigest(), size


@contextmanager
def downloaded(store: ObjectStore, key: str, suffix: str = "") -> Iterator[Path]:
    """The object streamed into a temporary file, removed afterwards: a reader parses or memory-maps the file
    instead of holding the object's bytes next to what it builds from them (a 2 GiB dataset needs 2 GiB, not 4)."""
    _, chunks = store.stream(key)
    fd, name = tempfile.mkstemp(prefix="editaudit-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        yield Path(name)
    finally:
        os.unlink(name)


def content_key(kind: str, digest: str, suffix: str) -> str:
    """`models/ab/abcdef….safetensors`: the key is the content's sha256, so identical uploads share one object."""
    return f"{kind}/{digest[:2]}/{digest}{suffix}"


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
        return self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, src: FileSource) -> bool:
        def copy(dst: BinaryIO) -> None:
            with _reading(src) as f:
                shutil.copyfileobj(f, dst, HASH_CHUNK)

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
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def stream(self, key: str, chunk: int = STREAM_CHUNK) -> tuple[int, Iterator[bytes]]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise KeyError(key) from None

        def chunks() -> Iterator[bytes]:
            with f:
                while block := f.read(chunk):
                    yield block

        return os.fstat(f.fileno()).st_size, chunks()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """S3 or an S3-compatible server. Transient errors (connection refused or reset, throttling, 5xx) are retried
    by botocore's standard mode with jittered exponential backoff, `attempts` tries in all; then they raise."""

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

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise

    def put(self, key: str, data: bytes) -> bool:
        if self.exists(key):
            return False
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                               ChecksumAlgorithm="SHA256")
        return True

    def put_file(self, key: str, src: FileSource) -> bool:
        if self.exists(key):
            return False
        extra = {"ChecksumAlgorithm": "SHA256"}
        if isinstance(src, (str, os.PathLike)):  # parts read lazily from the file
            self.client.upload_file(os.fspath(src), self.bucket, self._key(key), Config=self.transfer, ExtraArgs=extra)
            return True
        with _reading(src) as f:
            self.client.upload_fileobj(f, self.bucket, self._key(key), Config=self.transfer, ExtraArgs=extra)
        return True

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise KeyError(key) from None
            raise

    def stream(self, key: str, chunk: int = STREAM_CHUNK) -> tuple[int, Iterator[bytes]]:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise KeyError(key) from None
            raise
        return obj["ContentLength"], obj["Body"].iter_chunks(chunk)

    def delete(self, key: str) -> None:
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
