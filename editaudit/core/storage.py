"""Content-addressed object store: a local directory or any S3-compatible server (AWS, MinIO, moto)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> bool:
        """Store `data` under `key`; returns True when this call created the object (False: it already existed)."""

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        path = self._path(key)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # atomic: readers never see half an object
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """S3 or an S3-compatible server. Transient errors (connection refused or reset, throttling, 5xx) are retried
    by botocore's standard mode with jittered exponential backoff, `attempts` tries in all; then they raise."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str = "us-east-1",
                 attempts: int = 6):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        config = Config(retries={"mode": "standard", "max_attempts": attempts}, connect_timeout=5, read_timeout=60)
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

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

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise KeyError(key) from None
            raise

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
