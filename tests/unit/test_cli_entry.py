"""The `editaudit` entry point: subcommands imported only when invoked, so the CI install (click, httpx, pydantic,
pyyaml and nothing else) runs --help, --version and the gate; any internal error exits 2 (never 1, "blocked");
--url and --key before or after the verb."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import click
import pytest
from click.testing import CliRunner

from editaudit.cli.common import api_options
from editaudit.cli.main import COMMANDS, cli

BLOCKED = ("fastapi", "sqlalchemy", "uvicorn", "celery", "numpy", "torch", "torchvision", "starlette", "boto3",
           "alembic", "psycopg", "pydantic_settings", "safetensors", "matplotlib", "kombu", "redis", "scipy",
           "prometheus_client", "multipart")

# runs the CLI with every server-side package unimportable, as in an install of only click, httpx, pydantic, pyyaml
GATE_INSTALL = textwrap.dedent(f"""
    import importlib.abc, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"{{name}} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, Blocker())
    from editaudit.cli.main import main
    main(sys.argv[1:])
""")


def run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDITAUDIT_")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env)


def test_the_gate_install_runs_help_version_and_the_gate():
    help_ = run(GATE_INSTALL, "--help")
    assert help_.returncode == 0, help_.stderr
    assert all(name in help_.stdout for name in COMMANDS), "every command listed without importing it"
    version = run(GATE_INSTALL, "--version")
    assert version.returncode == 0 and version.stdout.startswith("editaudit, version ")
    gate_help = run(GATE_INSTALL, "gate", "--help")
    assert gate_help.returncode == 0 and "--policy" in gate_help.stdout and "Exit codes" in gate_help.stdout
    for verb in (["edits", "submit", "--help"], ["audits", "report", "--help"], ["models", "layers", "--help"],
                 ["archs", "--help"], ["promote", "--help"], ["demo", "--help"]):
        r = run(GATE_INSTALL, *verb)
        assert r.returncode == 0, (verb, r.stderr)
    unreachable = run(GATE_INSTALL, "gate", "e1", "--min", "edit.accuracy=0.9", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 2, unreachable.stderr
    assert unreachable.stderr.startswith("error: cannot reach http://127.0.0.1:9") and "Traceback" not in \
        unreachable.stderr
    before = run(GATE_INSTALL, "--url", "http://127.0.0.1:9", "edits", "list")
    assert before.returncode == 2 and "cannot reach http://127.0.0.1:9" in before.stderr


def test_a_server_command_without_the_server_packages_says_what_to_install():
    for verb, extra in (("serve", "api"), ("migrate", "api"), ("keys", "api")):
        r = run(GATE_INSTALL, verb, *(["list"] if verb == "keys" else []))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith(f"error: `editaudit {verb}` is not available in this install")
        assert f'pip install "editaudit[{extra}]"' in r.stderr


RAISING = textwrap.dedent("""
    import sys, click
    from editaudit.cli.main import cli, main

    @cli.command()
    def boom():
        raise RuntimeError("kaboom")

    @cli.command()
    def deep():
        raise KeyError("missing")

    cli.add_lazy("broken", "editaudit.cli.no_such_module:command", "cannot import")
    cli.add_lazy("notcmd", "editaudit.cli.common:EXIT_OK", "not a command")
    main(sys.argv[1:])
""")


@pytest.mark.parametrize("verb, message", [("boom", "error: RuntimeError: kaboom"),
                                           ("deep", "error: KeyError: 'missing'"),
                                           ("broken", "error: `editaudit broken` is not available in this install "
                                                      "(ModuleNotFoundError"),
                                           ("notcmd", "error: `editaudit notcmd` is not available")])
def test_an_internal_error_exits_2_with_one_line_never_1(verb, message):
    r = run(RAISING, verb)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith(message) and "Traceback" not in r.stderr, r.stderr


def test_debug_shows_the_traceback_and_still_exits_2():
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("EDITAUDIT_")}, "EDITAUDIT_DEBUG": "1"}
    r = subprocess.run([sys.executable, "-c", RAISING, "boom"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "Traceback" in r.stderr and "kaboom" in r.stderr


def test_usage_errors_exit_4():
    assert run(RAISING, "no-such-verb").returncode == 4
    assert run(RAISING, "gate").returncode == 4  # EDIT_ID missing
    assert run(RAISING, "audits", "report", "a1", "--format", "pdf").returncode == 4


@click.command("echo-options")
@api_options
def echo_options(url, key):
    click.echo(f"{url} {key}")


@pytest.fixture()
def with_echo(monkeypatch):
    for var in ("EDITAUDIT_URL", "EDITAUDIT_API_KEY", "EDITAUDIT_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    cli.add_lazy("echo-options", f"{__name__}:echo_options", "test")
    yield
    del cli.commands["echo-options"]


@pytest.mark.parametrize("args, env, out", [
    ([], {}, "http://127.0.0.1:8000 None"),
    ([], {"EDITAUDIT_URL": "http://env", "EDITAUDIT_API_KEY": "ea_env"}, "http://env ea_env"),
    (["--url", "http://root", "--key", "ea_root"], {"EDITAUDIT_URL": "http://env"}, "http://root ea_root"),
    (["--url", "http://root", "--key", "ea_root", "echo-options", "--url", "http://verb", "--key", "ea_verb"], {},
     "http://verb ea_verb"),
    (["--url", "http://root", "echo-options", "--key", "ea_verb"], {"EDITAUDIT_API_KEY": "ea_env"},
     "http://root ea_verb"),
    (["echo-options", "--url", "http://verb"], {"EDITAUDIT_URL": "http://env", "EDITAUDIT_API_TOKEN": "ea_old"},
     "http://verb ea_old"),
])
def test_url_and_key_before_or_after_the_verb_the_one_after_wins(with_echo, monkeypatch, args, env, out):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    argv = args if "echo-options" in args else [*args, "echo-options"]
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 0 and r.output.strip() == out, r.output


def test_help_imports_no_subcommand():
    code = ("import sys\nfrom editaudit.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('editaudit.cli.') and m != 'editaudit.cli.main')\n"
            "sys.stderr.write(repr(loaded))\nsys.exit(code)")
    r = run(code)
    assert r.returncode == 0 and r.stderr == "[]", r.stderr


def test_examples_style_lookup_still_works():
    assert cli.commands["gate"].name == "gate" and "gate" in cli.commands and "nope" not in cli.commands
    assert set(COMMANDS) <= set(cli.commands)
