"""schemathesis over the whole OpenAPI schema, in the production mode (Postgres, Redis, S3 over HTTP, a real
Celery worker, uvicorn over HTTP) with an admin key: no input may get a 5xx, every answer must be a documented
status with the documented content type and schema, and every non-public route must refuse a request without the
key (schemathesis resends each case without it). The stack holds real rows (a model, a dataset, a finished edit),
so the listings answer with items their schema must describe."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from editaudit.cli.embedded import start_worker
from editaudit.core.migrate import upgrade
from editaudit.service.app import create_app
from tests.conftest import SPEC, key_headers, make_settings, postgres_database, serve_over_http

pytestmark = [pytest.mark.slow, pytest.mark.services]

EXAMPLES = int(os.environ.get("EDITAUDIT_SCHEMATHESIS_EXAMPLES", "25"))  # per operation (~40 operations)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, ignored_auth]


def _schema() -> dict:
    with tempfile.TemporaryDirectory() as d:  # the schema does not depend on the mode: read it from any app
        return create_app(make_settings(Path(d))).openapi()


SCHEMA = schemathesis.openapi.from_dict(_schema())


@pytest.fixture(scope="module")
def production(tmp_path_factory, redis_url, s3_server, digits_model, failures_npz):
    import httpx

    tmp = tmp_path_factory.mktemp("schemathesis")
    endpoint, bucket = s3_server
    with postgres_database() as database_url:
        cfg = make_settings(tmp, database_url=database_url, broker_url=redis_url, store_url=f"s3://{bucket}/st",
                            s3_endpoint_url=endpoint)
        upgrade(database_url)
        headers = key_headers(cfg, "default", name="schemathesis")
        worker = start_worker(cfg, tmp / "worker.log")
        try:
            with serve_over_http(create_app(cfg)) as base:
                _seed(httpx.Client(base_url=base, headers=headers, timeout=60), digits_model, failures_npz)
                yield base, headers
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def _seed(c, digits_model, failures_npz) -> None:
    """Real rows, and a worker that answers: /readyz is 200 and the listings are not empty."""
    model = c.post("/models", files={"weights": ("m.safetensors", digits_model[0])}, data={"spec": json.dumps(SPEC)})
    ds = c.post("/datasets", files={"file": ("f.npz", failures_npz)})
    job = c.post("/edits", json={"model_id": model.json()["id"], "method": "finetune_layer", "layers": ["fc"],
                                 "edit_set": ds.json()["id"], "test_set": "builtin:digits-test",
                                 "audit": {"attacks": [], "max_samples": 64}}).json()
    for _ in range(1200):
        if c.get(f"/edits/{job['id']}").json()["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.25)
    assert c.get(f"/edits/{job['id']}").json()["status"] == "succeeded"
    for _ in range(120):  # the worker answers pings once it is up
        if c.get("/readyz").status_code == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"not ready: {c.get('/readyz').text}")


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_whole_schema_in_the_production_mode(case, production):
    """Generated requests (valid and invalid) against one operation, with the key and again without it: no 5xx,
    only documented statuses, content types, schemas and headers, and 401 without the key where one is needed."""
    base, headers = production
    case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=120)
