"""The CI examples run: their shell steps, read from the YAML (not copied), run with bash against the app served over
HTTP, in a checkout made of an `editaudit/` folder like the one `editaudit demo --keep` writes. Queued edits are run
by a thread calling the Celery task's body. The job ends with the gate's exit code: a server policy that passes
gives 0, one that blocks gives 1, and the Markdown summary and the JUnit report are written either way.

The steps that install the CLI are not run (this process's environment has it); their requirement is parsed as pip
would and must name this repository at a commit, without torch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import SPEC
from tests.integration.test_cli_verbs import job_runner  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CI_VARS = {"EDITAUDIT_GIT": "https://github.com/acme/editaudit", "EDITAUDIT_REF": COMMIT}
POLICIES = {"ci-pass": [{"metric": "edit.accuracy", "min": 0.0}],
            "ci-block": [{"metric": "test.accuracy", "max": 0.0}]}
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def evaluate(expr: str, context: dict) -> str:
    """The part of GitHub's expression language the example uses: dotted lookups, 'literals' and `a || b`."""
    for alternative in expr.split("||"):
        alternative = alternative.strip()
        if alternative.startswith("'"):
            return alternative.strip("'")
        value: object = context
        for part in alternative.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value:
            return str(value)
    return ""


def substitute(text: str, context: dict) -> str:
    return EXPRESSION.sub(lambda m: evaluate(m.group(1), context), text)


def bash(script: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """As a CI runner runs a step: GitHub's default `bash --noprofile --norc -eo pipefail {0}`."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def check_install_line(line: str, env: dict) -> None:
    """`pip install "editaudit @ git+URL@COMMIT"`: this repository at a commit, the base install (no torch)."""
    expanded = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
    (spec,) = re.findall(r'"([^"]+)"', expanded)
    req = Requirement(spec)
    assert req.name == "editaudit" and not req.extras, spec
    assert req.url == f"git+{CI_VARS['EDITAUDIT_GIT']}@{COMMIT}", spec


@pytest.fixture()
def checkout(tmp_path, digits_model, failures_npz) -> Path:
    """A repository with an `editaudit/` folder: the model and its spec, an edit set, and edit.json naming them."""
    folder = tmp_path / "repo" / "editaudit"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(digits_model[0])
    (folder / "model.json").write_text(json.dumps(SPEC))
    (folder / "edit-set.npz").write_bytes(failures_npz)
    (folder / "edit.json").write_text(json.dumps({
        "model_id": "@model.safetensors", "method": "finetune_layer", "layers": ["fc"], "edit_set": "@edit-set.npz",
        "test_set": "builtin:digits-test",
        "audit": {"attacks": [{"id": "pgd", "name": "pgd", "eps": 0.03, "steps": 3}], "max_samples": 120}}))
    return folder.parent


@pytest.fixture()
def ci_server(api_client, http_url, job_runner):  # noqa: F811
    for name, rules in POLICIES.items():
        r = api_client.post("/policies", json={"name": name, "policy": {"version": 1, "name": name, "rules": rules}})
        assert r.status_code == 201, r.text
    return http_url


def base_env(url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDITAUDIT_", "GITHUB_", "CI_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the `editaudit` of this environment
    return {**env, **CI_VARS, "EDITAUDIT_URL": url}


def run_github(checkout: Path, url: str, policy: str) -> tuple[int, Path, Path]:
    """The workflow's job: its `run` steps in order, with its env; stops at the first failing step."""
    job = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())["jobs"]["gate"]
    summary, output = checkout / "summary.md", checkout / "output.txt"
    context = {"vars": {**CI_VARS, "EDITAUDIT_URL": url, "EDITAUDIT_POLICY": policy}, "secrets": {},
               "github": {"event": {"pull_request": {"head": {"sha": COMMIT}}}}, "steps": {}}
    code = 0
    for step in job["steps"]:
        if "run" not in step:
            continue
        env = {**base_env(url), "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output)}
        env.update({k: substitute(str(v), context) for k, v in {**job["env"], **step.get("env", {})}.items()})
        if step.get("id") == "install":
            check_install_line(step["run"], env)
            continue
        output.write_text("")
        proc = bash(step["run"], env, checkout)
        outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        context["steps"][step.get("id", "")] = {"outputs": outputs}
        if proc.returncode:
            code = proc.returncode
            assert step.get("id") == "gate", f"step {step.get('name')} failed ({code}): {proc.stderr}"
            break
    return code, summary, checkout / "editaudit-gate.xml"


def run_gitlab(checkout: Path, url: str, policy: str) -> tuple[int, Path, Path]:
    """The job's before_script (the install line checked, not run) and script, in one shell as GitLab runs them."""
    job = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())["editaudit-gate"]
    env = {**base_env(url), **{k: str(v) for k, v in job["variables"].items()}, "EDITAUDIT_POLICY": policy,
           "CI_COMMIT_SHA": COMMIT}
    installs = [line for line in job["before_script"] if line.startswith("pip install")]
    assert len(installs) == 1
    check_install_line(installs[0], env)
    proc = bash("\n".join(job["script"]), env, checkout)
    return proc.returncode, checkout / "gate.md", checkout / job["artifacts"]["reports"]["junit"]


@pytest.mark.slow
@pytest.mark.parametrize("run_job", [run_github, run_gitlab], ids=["github", "gitlab"])
def test_the_ci_example_submits_gates_and_ends_with_the_gates_exit_code(run_job, checkout, ci_server):
    for policy, expected in (("ci-pass", 0), ("ci-block", 1)):  # the same commit: one edit, gated twice
        code, summary, junit = run_job(checkout, ci_server, policy)
        assert code == expected, (policy, code)
        text = summary.read_text()
        assert ("PASS" if expected == 0 else "FAIL") in text.upper() and "test.accuracy" in text or expected == 0
        suite = ET.parse(junit).getroot()
        failures = int(suite.get("failures") or suite.find(".//testsuite").get("failures"))
        assert (failures == 0) == (expected == 0), ET.tostring(suite)[:500]
        summary.unlink()
        junit.unlink()


def test_the_examples_use_only_what_the_cli_accepts():
    """Every `editaudit ...` line of both examples parses with the CLI's own options (no server needed)."""
    from editaudit.cli.main import cli

    lines = []
    gh = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    lines += [ln for s in gh["jobs"]["gate"]["steps"] for ln in s.get("run", "").splitlines()]
    gl = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())["editaudit-gate"]
    lines += [re.sub(r"^\w+=\$\((.*)\)$", r"\1", ln) for ln in gl["script"]]
    commands = [re.search(r"(editaudit [^)|>]*)", ln).group(1) for ln in lines if re.search(r"\beditaudit ", ln)
                and not ln.lstrip().startswith(("echo", "pip"))]
    assert {c.split()[1] for c in commands} == {"edits", "gate"}
    import shlex

    import click

    for command in commands:
        argv = shlex.split(re.sub(r"\$\{?\w+\}?", "X", command))[1:]
        group = cli
        while isinstance(group, click.Group):
            group, argv = group.get_command(click.Context(group), argv[0]), argv[1:]
        group.make_context(group.name, argv)
