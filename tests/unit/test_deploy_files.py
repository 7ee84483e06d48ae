"""The Dockerfile and compose file cannot be built here (no Docker engine): check their structure instead."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


WORKERS = ("worker", "worker-gpu")


def test_compose_has_the_production_services_with_healthchecks():
    services = compose()["services"]
    assert {"api", *WORKERS, "postgres", "redis", "minio", "migrate"} <= set(services)
    for name in ("api", *WORKERS, "postgres", "redis", "minio"):
        assert "healthcheck" in services[name], name


def test_a_cpu_profile_without_devices_and_a_gpu_profile_with_one_gpu_per_replica():
    services = compose()["services"]
    cpu, gpu = services["worker"], services["worker-gpu"]
    assert cpu["profiles"] == ["cpu"] and gpu["profiles"] == ["gpu"]
    assert "deploy" not in cpu, "the CPU worker must start on a machine without an NVIDIA GPU"
    assert cpu["build"]["args"]["TORCH_INDEX"].endswith("/whl/cpu") and cpu["environment"]["EDITAUDIT_DEVICE"] == "cpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "TORCH_INDEX" not in (gpu["build"].get("args") or {}), "the Dockerfile's default index is CUDA's"
    assert cpu["image"] != gpu["image"], "two builds, two images"
    assert "COMPOSE_PROFILES=cpu" in (ROOT / ".env.example").read_text(), "`docker compose up` works on a laptop"
    for name, svc in services.items():  # no service outside a profile reserves a device
        assert "deploy" not in svc or svc.get("profiles") == ["gpu"], name


def test_workers_scale():
    """`--scale worker=N` needs replicas that share nothing fixed: no container name, no host port."""
    for name in WORKERS:
        svc = compose()["services"][name]
        assert "container_name" not in svc and "ports" not in svc, name


def test_api_has_no_torch_target():
    services = compose()["services"]
    assert services["api"]["build"]["target"] == "api"
    assert all(services[w]["build"]["target"] == "worker" for w in WORKERS)


def test_migrate_runs_once_before_api_and_worker():
    services = compose()["services"]
    assert services["migrate"]["command"] == ["editaudit", "migrate"] and services["migrate"]["restart"] == "no"
    for name in ("api", *WORKERS):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_services_share_the_production_urls():
    services = compose()["services"]
    for name in ("api", *WORKERS, "migrate"):
        env = services[name]["environment"]
        assert env["EDITAUDIT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["EDITAUDIT_BROKER_URL"].startswith("redis://") and env["EDITAUDIT_STORE_URL"].startswith("s3://")


def _stages() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    parts = re.split(r"^FROM \S+ AS (\w+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))  # re.split: text, then (name, stage) pairs


def test_dockerfile_images_install_the_built_wheel():
    stages = _stages()
    assert list(stages) == ["wheel", "base", "api", "worker"]
    assert "python -m build --wheel" in stages["wheel"]
    for root in ("editaudit", "service", "worker", "migrations"):  # the wheel is built from every source root
        assert f"COPY {root} ./{root}" in stages["wheel"], root
    assert "setup.py" in stages["wheel"] and "LICENSE" in stages["wheel"]
    for image, extra in (("api", "api"), ("worker", "worker")):
        body = stages[image]
        assert f'pip install "$(ls /dist/editaudit-*.whl)[{extra}]"' in body, image
        assert "COPY" not in body and "pip install ." not in body, f"the {image} image installs the wheel only"
        assert "USER editaudit" in body, image
    assert "torch" not in stages["api"], "the api image installs no torch"
    assert "TORCH_INDEX" in stages["worker"] and "celery" in stages["worker"]


def test_compose_needs_a_token_and_restarts_pinned_services():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "EDITAUDIT_API_TOKEN: ${EDITAUDIT_API_TOKEN:?" in text, "compose refuses to start without a token"
    assert "EDITAUDIT_API_TOKEN=" in (ROOT / ".env.example").read_text()
    services = compose()["services"]
    for name in ("api", *WORKERS, "postgres", "redis", "minio"):
        assert services[name]["restart"] == "unless-stopped", name
    for name, svc in services.items():
        image = svc.get("image", "")
        assert not image.endswith(":latest") and (":" in image or image.startswith("editaudit-")), (name, image)


def test_one_build_serves_migrate_and_api():
    services = compose()["services"]
    assert "build" not in services["migrate"] and services["migrate"]["image"] == services["api"]["image"]
    assert services["migrate"]["pull_policy"] == "never"


def test_worker_health_check_reads_the_liveness_file_not_a_ping():
    for name in WORKERS:
        worker = compose()["services"][name]
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


def _dockerfile_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of each image's CMD (exec form)."""
    import json

    return [(f"Dockerfile:{stage}", json.loads(m.group(1))) for stage, body in _stages().items()
            for m in re.finditer(r"^CMD (\[.*\])\s*$", body, flags=re.M)]


def _compose_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of each command and health check that runs one of our images."""
    out = []
    for name, svc in compose()["services"].items():
        if not str(svc.get("image", "")).startswith("editaudit-"):
            continue
        if "command" in svc:
            out.append((f"compose:{name}.command", svc["command"]))
        test = (svc.get("healthcheck") or {}).get("test") or []
        if test[:1] == ["CMD"]:
            out.append((f"compose:{name}.healthcheck", test[1:]))
    return out


def _check_argv(where: str, argv: list[str]) -> None:
    """The program is an entry point the wheel's dependencies install, and what it names exists and parses."""
    import importlib
    import importlib.metadata as md
    import importlib.util
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    program, args = argv[0], argv[1:]
    if program in scripts:  # our own console script: the subcommand must exist and accept the arguments
        import click

        from editaudit.cli.main import cli

        sub = cli.get_command(click.Context(cli), args[0])
        assert sub is not None, (where, argv)
        sub.make_context(sub.name, list(args[1:]))
        return
    assert program == "python" or md.entry_points(group="console_scripts", name=program), (where, program)
    if program == "celery":
        module = args[args.index("-A") + 1]
        assert hasattr(importlib.import_module(module), "app"), (where, module)
        assert "worker" in args and "--pool=solo" in args, where
    elif program == "uvicorn":
        module, _, attr = args[0].partition(":")
        mod = importlib.import_module(module)
        assert attr in vars(mod) or "__getattr__" in vars(mod), (where, args[0])
    elif program == "python" and args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]) is not None, (where, args[1])
        mod = importlib.import_module(args[1])
        if hasattr(mod, "parser"):
            mod.parser().parse_args(args[2:])
    elif program == "python" and args[:1] == ["-c"]:
        compile(args[1], where, "exec")
    else:
        raise AssertionError(f"{where}: no check for {argv}")


def test_every_service_command_runs_an_installed_entry_point():
    commands = _dockerfile_commands() + _compose_commands()
    assert {w for w, _ in commands} >= {"Dockerfile:api", "Dockerfile:worker", "compose:migrate.command",
                                        "compose:api.command", "compose:worker.command",
                                        "compose:worker-gpu.command", "compose:worker.healthcheck"}
    for where, argv in commands:
        _check_argv(where, argv)
