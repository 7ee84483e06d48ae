"""The CI examples are valid YAML and call the real CLI with flags it accepts."""

import shlex
from pathlib import Path

import yaml

from editaudit.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def _gate_commands(text: str) -> list[list[str]]:
    cmds = []
    for line in text.splitlines():
        line = line.strip().lstrip("- ").replace("run: ", "")
        if line.startswith("editaudit gate"):
            line = line.split(">")[0].split("||")[0]
            cmds.append(shlex.split(line.replace("${{ inputs.edit_id }}", "EDIT").replace("$EDIT_ID", "EDIT")))
    return cmds


def test_examples_parse_and_use_valid_gate_flags():
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        text = (ROOT / "examples" / name).read_text()
        yaml.safe_load(text)
        cmds = _gate_commands(text)
        assert cmds, name
        for argv in cmds:
            assert argv[:2] == ["editaudit", "gate"]
            # parse and validate the options exactly as the CLI would, without calling a server
            ctx = cli.commands["gate"].make_context("gate", argv[2:])
            assert ctx.params["edit_id"] == "EDIT" and ctx.params["policy"] == "default", (name, argv)
    gh = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text())
    steps = gh["jobs"]["gate"]["steps"]
    assert any("upload-artifact" in s.get("uses", "") for s in steps)
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in steps)
    gl = yaml.safe_load((ROOT / "examples" / "gitlab-ci.yml").read_text())
    assert gl["editaudit-gate"]["artifacts"]["reports"]["junit"] == "gate-junit.xml"
