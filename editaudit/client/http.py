"""The transport under the client: the base URL and API key, one request per operation, problems raised as
`ApiError`, downloads streamed to a file while they are hashed.

Each client method carries its operation (`@operation("GET", "/edits/{edit_id}")`): the request is built from that
declaration and from nothing else, and the contract test compares the declarations with the server's OpenAPI
schema, so a method cannot call a path or send a query parameter the schema does not have."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from string import Formatter
from typing import IO, Any, TypeVar
from urllib.parse import quote

import httpx

from editaudit import __version__
from editaudit.client.errors import ApiError, ChecksumError, IncompleteDownload
from editaudit.client.types import Download

DEFAULT_URL = "http://127.0.0.1:8000"
KEY_ENV = ("EDITAUDIT_API_KEY", "EDITAUDIT_API_TOKEN")  # the second is the older name, still read
CHUNK = 1 << 20
SHA_HEADER = "X-Content-SHA256"

F = TypeVar("F", bound=Callable[..., Any])


def default_url() -> str:
    """$EDITAUDIT_URL, else the embedded server's address."""
    return os.environ.get("EDITAUDIT_URL") or DEFAULT_URL


def default_key() -> str | None:
    """$EDITAUDIT_API_KEY (or the older $EDITAUDIT_API_TOKEN); None sends no Authorization header."""
    return next((os.environ[k] for k in KEY_ENV if os.environ.get(k)), None)


@dataclass(frozen=True)
class Operation:
    """One operation of the API: its operationId (the method's name), HTTP method, path template and the names of
    its query parameters."""

    id: str
    method: str
    path: str
    query: tuple[str, ...] = ()

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(name for _, name, _, _ in Formatter().parse(self.path) if name)


def operation(method: str, path: str, query: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Marks a client method as the operation named after it."""
    def mark(fn: F) -> F:
        fn.operation = Operation(fn.__name__, method, path, tuple(query))  # type: ignore[attr-defined]
        return fn
    return mark


def operation_of(fn: Callable[..., Any]) -> Operation:
    """The operation a marked method carries."""
    op: Operation = fn.operation  # type: ignore[attr-defined]
    return op


def operations(cls: type) -> dict[str, Operation]:
    """operationId -> Operation for every marked method of a client class."""
    return {name: fn.operation for name, fn in vars(cls).items() if hasattr(fn, "operation")}


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, Enum):
        return str(v.value)
    return str(v)


class Transport:
    """An httpx.Client with the base URL and bearer key, and the operation-to-request step."""

    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60.0,
                 http: httpx.Client | None = None):
        self.url = (url or default_url()).rstrip("/")
        key = key or default_key()
        headers = {"User-Agent": f"editaudit-client/{__version__}"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout)
        self.http.headers.update(headers)

    def close(self) -> None:
        self.http.close()

    def build(self, op: Operation, params: dict[str, Any], headers: dict[str, str] | None = None,
              **content: Any) -> httpx.Request:
        """The request for `op`: path parameters filled in (percent-encoded), query parameters that are not None;
        a parameter the operation does not declare is a programming error."""
        unknown = set(params) - set(op.path_params) - set(op.query)
        missing = set(op.path_params) - set(params)
        if unknown or missing:
            raise TypeError(f"{op.id}: unknown parameters {sorted(unknown)}, missing {sorted(missing)}")
        path = op.path.format(**{k: quote(str(params[k]), safe="") for k in op.path_params})
        query = {k: _query_value(params[k]) for k in op.query if params.get(k) is not None}
        headers = {k: v for k, v in (headers or {}).items() if v is not None}
        return self.http.build_request(op.method, path, params=query, headers=headers, **content)

    def send(self, op: Operation, params: dict[str, Any], headers: dict[str, str] | None = None,
             **content: Any) -> httpx.Response:
        r = self.http.send(self.build(op, params, headers, **content))
        if r.status_code >= 400:
            raise ApiError.from_response(r)
        return r

    def download(self, op: Operation, params: dict[str, Any], dest: str | os.PathLike[str] | IO[bytes]) -> Download:
        """Streams the body to `dest` (a path: written to `<dest>.part`, renamed once verified; or a binary file),
        hashing as it writes, and raises ChecksumError unless the hash matches the server's X-Content-SHA256
        (IncompleteDownload, one, when the body broke off: never a short file taken for the whole)."""
        r = self.http.send(self.build(op, params), stream=True)
        try:
            if r.status_code >= 400:
                r.read()
                raise ApiError.from_response(r)
            expected = (r.headers.get(SHA_HEADER) or "").lower()
            if isinstance(dest, (str, os.PathLike)):
                final = Path(dest)
                part = final.with_name(final.name + ".part")
                try:
                    with open(part, "wb") as f:
                        size, digest = _copy(r, f, str(final))
                    _verify(expected, digest, str(final))
                    os.replace(part, final)
                finally:
                    part.unlink(missing_ok=True)
                return Download(path=str(final), size=size, sha256=digest)
            size, digest = _copy(r, dest, "the file object")
            _verify(expected, digest, "the file object")
            return Download(path=None, size=size, sha256=digest)
        finally:
            r.close()


def _copy(r: httpx.Response, f: IO[bytes], where: str) -> tuple[int, str]:
    """(size, sha256) of the body written to `f`; IncompleteDownload when it breaks off or falls short of its
    Content-Length."""
    h, size = hashlib.sha256(), 0
    declared = r.headers.get("Content-Length")
    of = f" of {declared}" if declared else ""
    try:
        for chunk in r.iter_bytes(CHUNK):
            f.write(chunk)
            h.update(chunk)
            size += len(chunk)
    except httpx.TransportError as e:
        raise IncompleteDownload(f"{where}: the download broke off after {size}{of} bytes ({e or type(e).__name__}); "
                                 "retry it") from e
    encoded = r.headers.get("Content-Encoding", "identity") != "identity"  # then Content-Length counts other bytes
    if declared and declared.isdigit() and not encoded and int(declared) != size:
        raise IncompleteDownload(f"{where}: {size} bytes arrived{of}; retry the download")
    return size, h.hexdigest()


def _verify(expected: str, digest: str, where: str) -> None:
    if not expected:
        raise ChecksumError(f"the server sent no {SHA_HEADER}: cannot verify {where}")
    if expected != digest:
        raise ChecksumError(f"{where}: sha256 {digest} does not match the server's {SHA_HEADER} {expected}")
