"""What the client raises: the server's problem (RFC 9457) as `ApiError`, a download that does not match its
checksum as `ChecksumError`. Network failures stay httpx's (`httpx.TransportError`): they are not the API's answer."""

from __future__ import annotations

from typing import Any, cast

import httpx

from editaudit.client.types import FieldError


class ClientError(Exception):
    """Base of what the editaudit client raises itself."""


class ApiError(ClientError):
    """The API answered with an error. `body` is the whole problem document: routes add members such as `gate` (a
    refused promotion's verdict) or `checks` (what /readyz found not ready)."""

    def __init__(self, status: int, body: dict[str, Any] | str, retry_after: float | None = None):
        self.status = status
        self.body: dict[str, Any] = body if isinstance(body, dict) else {"detail": body}
        self.title: str = str(self.body.get("title") or "")
        self.detail: str = str(self.body.get("detail") or self.title or f"HTTP {status}")
        raw = self.body.get("errors")
        items = raw if isinstance(raw, list) else []
        self.errors: list[FieldError] = [cast(FieldError, e) for e in items if isinstance(e, dict)]
        self.retry_after = retry_after  # seconds, from Retry-After on 503 (the database or a dependency is down)
        super().__init__(f"HTTP {status}: {self.detail}")

    @property
    def fields(self) -> list[str]:
        """The request fields the problem names (`edit_id`, `spec.arch`, `audit.attacks.0.eps`, ...)."""
        return [str(e.get("field")) for e in self.errors if e.get("field") is not None]

    @classmethod
    def from_response(cls, r: httpx.Response) -> ApiError:
        """The problem body, or the text of a non-JSON error (a proxy's HTML page), cut short."""
        try:
            body = r.json()
        except ValueError:
            body = r.text[:500].strip() or r.reason_phrase
        retry = r.headers.get("Retry-After")
        return cls(r.status_code, body, float(retry) if retry and retry.isdigit() else None)


class ChecksumError(ClientError):
    """A download's bytes do not hash to the X-Content-SHA256 the server sent (or it sent none): the partial file
    is removed, nothing is left at the destination."""


class IncompleteDownload(ChecksumError):
    """A download that broke off before its last byte (the connection dropped, fewer bytes than Content-Length: the
    server's store failed mid-object): a ChecksumError too, since what arrived cannot hash to the object's sha256;
    the partial file is removed. Retry the download."""
