"""The CI examples' shape: valid YAML, triggered by changes to an edit in the repository, the key from a secret, the
CLI installed from a repository at a commit without torch, the gate published as a summary and a test report.
tests/integration/test_ci_examples.py runs their steps against a server."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TORCH = re.compile(r"\b(torch|torchvision|adversarial-robustness-toolbox)\b|\[(worker|all|api)\]")
INSTALL = '"editaudit @ git+${EDITAUDIT_GIT}@${EDITAUDIT_REF}"'


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def test_github_runs_on_pull_requests_that_touch_an_edit_and_publishes_the_gate():
    gh = _load("github-actions.yml")
    assert gh[True]["pull_request"]["paths"] == ["editaudit/**"]  # YAML 1.1 reads `on` as True
    job = gh["jobs"]["gate"]
    assert job["env"]["EDITAUDIT_API_KEY"] == "${{ secrets.EDITAUDIT_API_KEY }}"
    steps = {s.get("id") or s.get("uses", s.get("name")): s for s in job["steps"]}
    assert steps["install"]["run"] == f"pip install {INSTALL}"
    assert "GITHUB_STEP_SUMMARY" in steps["gate"]["run"] and "--format junit" in steps["gate"]["run"]
    assert steps["gate"]["run"].rstrip().endswith("exit $code"), "the job ends with the gate's exit code"
    assert "mikepenz/action-junit-report@v4" in steps, "the JUnit file is published as a test report"
    for step in job["steps"]:  # expressions go through env, never pasted into a script (script injection)
        assert "${{" not in step.get("run", ""), step


def test_gitlab_reports_the_gate_as_junit_and_keeps_the_markdown():
    job = _load("gitlab-ci.yml")["editaudit-gate"]
    assert job["artifacts"]["reports"]["junit"] == "gate-junit.xml" and job["artifacts"]["when"] == "always"
    assert f"pip install {INSTALL}" in job["before_script"]
    assert job["script"][-1] == "exit ${code:-0}"


def test_examples_install_the_cli_without_torch_and_take_the_key_from_a_secret():
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        text = (ROOT / "examples" / name).read_text()
        for line in (ln for ln in text.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")):
            assert not TORCH.search(line), (name, line)
            assert INSTALL in line, (name, line)  # never the bare name: an index's `editaudit` may not be this one
        assert "EDITAUDIT_API_KEY" in text and "EDITAUDIT_API_TOKEN" not in text, name
        assert "EDITAUDIT_REF" in text and "a commit" in text, "the variable is documented in the file"


def test_the_example_study_is_a_valid_request_of_the_size_it_states():
    from editaudit.contracts.studies import count
    from editaudit.service.schemas.studies import StudyRequest

    req = StudyRequest.model_validate(yaml.safe_load((ROOT / "examples" / "study.yaml").read_text()))
    assert count(req.grid) == 60 and "60 runs" in (ROOT / "examples" / "study.yaml").read_text()
