"""A small HTTP client for the editaudit API (used by the CLI, the demo and the tests)."""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import httpx

from editaudit.contracts.statuses import TERMINAL

DEFAULT_URL = "http://127.0.0.1:8000"


def default_url() -> str:
    return os.environ.get("EDITAUDIT_URL", DEFAULT_URL)


class ApiError(Exception):
    def __init__(self, status: int, body: dict | str):
        self.status, self.body = status, body
        detail = body.get("detail") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {detail}")


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0):
        token = token or os.environ.get("EDITAUDIT_API_KEY") or os.environ.get("EDITAUDIT_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url or default_url(), headers=headers, timeout=timeout)

    def _json(self, r: httpx.Response) -> dict:
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = r.text
            raise ApiError(r.status_code, body)
        return r.json()

    def get(self, path: str) -> dict:
        return self._json(self.http.get(path))

    def post(self, path: str, body: dict) -> dict:
        return self._json(self.http.post(path, json=body))

    def upload_model(self, weights: bytes, spec: dict) -> dict:
        return self._json(self.http.post("/models", files={"weights": ("model.safetensors", weights)},
                                         data={"spec": json.dumps(spec)}))

    def upload_dataset(self, data: bytes, filename: str = "data.npz") -> dict:
        return self._json(self.http.post("/datasets", files={"file": (filename, data)}))

    def create_edit(self, body: dict) -> dict:
        return self._json(self.http.post("/edits", json=body))

    def edit_weights(self, edit_id: str) -> bytes:
        r = self.http.get(f"/edits/{edit_id}/weights")
        if r.status_code >= 400:
            self._json(r)
        return r.content

    def wait_for_edit(self, edit_id: str, timeout: float = 600.0, poll: float = 0.25,
                      on_progress: Callable[[dict], None] | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            edit = self.get(f"/edits/{edit_id}")
            if on_progress:
                on_progress(edit)
            if edit["status"] in TERMINAL:
                return edit
            if time.monotonic() > deadline:
                raise TimeoutError(f"edit {edit_id} still {edit['status']} after {timeout:.0f}s")
            time.sleep(poll)
