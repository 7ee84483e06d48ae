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


def test_compose_needs_a_token_and_restarts_pinned_services():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "EDITAUDIT_API_TOKEN: ${EDITAUDIT_API_TOKEN:?" in text, "compose refuses to start without a token"
    assert "EDITAUDIT_API_TOKEN=" in (ROOT / ".env.example").read_text()
    services = compose()["services"]
    for name in ("api", "worker", "postgres", "redis", "minio"):
        assert services[name]["restart"] == "unless-stopped", name
    for name, svc in services.items():
        image = svc.get("image", "")
        assert not image.endswith(":latest") and (":" in image or image.startswith("editaudit-")), (name, image)


def test_one_build_serves_migrate_and_api():
    services = compose()["services"]
    assert "build" not in services["migrate"] and services["migrate"]["image"] == services["api"]["image"]
    assert services["migrate"]["pull_policy"] == "never"


def test_worker_health_check_reads_the_liveness_file_not_a_ping():
    worker = compose()["services"]["worker"]
    assert worker["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "editaudit.worker.health"]
    assert "ping" not in " ".join(worker["healthcheck"]["test"])


def test_worker_liveness_file(tmp_path, monkeypatch):
    from editaudit.core.settings import get_settings
    from editaudit.worker import health

    path = tmp_path / "alive"
    monkeypatch.setenv("EDITAUDIT_WORKER_ALIVE_FILE", str(path))
    get_settings.cache_clear()
    try:
        assert health.main([]) == 1  # missing
        health.touch(path)
        assert health.main(["--max-age-s", "60"]) == 0
        import os

        os.utime(path, (path.stat().st_atime - 600, path.stat().st_mtime - 600))
        assert health.main(["--max-age-s", "60"]) == 1
    finally:
        get_settings.cache_clear()


def test_the_reconciler_thread_keeps_the_liveness_file_fresh(tmp_path):
    """Touched before every pass, even when the pass fails (here: no database at all)."""
    import time

    from editaudit.core.settings import Settings
    from editaudit.worker.jobs.reconcile import start_reconciler

    path = tmp_path / "alive"
    stop = start_reconciler(None, lambda _id: None, Settings(data_dir=tmp_path, worker_alive_file=path,
                                                            reconcile_every_s=0.2))
    try:
        for _ in range(200):
            if path.exists():
                break
            time.sleep(0.05)
        first = path.stat().st_mtime_ns
        for _ in range(200):
            if path.stat().st_mtime_ns != first:
                break
            time.sleep(0.05)
        assert path.stat().st_mtime_ns != first
    finally:
        stop.set()
