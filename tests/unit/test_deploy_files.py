"""The Dockerfile and compose file cannot be built here (no Docker engine): check their structure instead."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services_with_healthchecks():
    services = compose()["services"]
    assert {"api", "worker", "postgres", "redis", "minio", "migrate"} <= set(services)
    for name in ("api", "worker", "postgres", "redis", "minio"):
        assert "healthcheck" in services[name], name


def test_worker_reserves_a_gpu_and_api_has_no_torch_target():
    services = compose()["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["api"]["build"]["target"] == "api" and services["worker"]["build"]["target"] == "worker"


def test_migrate_runs_once_before_api_and_worker():
    services = compose()["services"]
    assert services["migrate"]["command"] == ["editaudit", "migrate"] and services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_services_share_the_production_urls():
    services = compose()["services"]
    for name in ("api", "worker", "migrate"):
        env = services[name]["environment"]
        assert env["EDITAUDIT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["EDITAUDIT_BROKER_URL"].startswith("redis://") and env["EDITAUDIT_STORE_URL"].startswith("s3://")


def test_dockerfile_targets():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.M)
    assert stages == ["base", "api", "worker"]
    api = text.split("AS api")[1].split("AS worker")[0]
    assert "torch" not in api.replace("no torch", ""), "the api image installs no torch"
    assert "pip install ." in api and '".[worker]"' in text
    assert "USER editaudit" in api and "celery" in text.split("AS worker")[1]


def test_both_images_install_every_source_root():
    """setup.py discovers the packages under each root; the Dockerfile must copy every one of them."""
    text = (ROOT / "Dockerfile").read_text()
    base = text.split("AS api")[0]
    for root in ("editaudit", "service", "worker", "migrations"):
        assert f"COPY {root} ./{root}" in base, root
    assert "setup.py" in base and "LICENSE" in base
