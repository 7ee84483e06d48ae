"""The CI examples are valid YAML, install the CLI from the repository without torch, pass the key from a secret,
and call the real CLI with flags it accepts."""

import re
import shlex
import tomllib
from pathlib import Path

import click
import yaml

from editaudit.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ("github-actions.yml", "gitlab-ci.yml")
TORCH = re.compile(r"\b(torch|torchvision|adversarial-robustness-toolbox)\b|\[(worker|all)\]")


def _lines(text: str) -> list[str]:
    return [line.strip().lstrip("- ").replace("run: ", "") for line in text.splitlines()
            if not line.strip().startswith("#")]


def _editaudit_commands(text: str) -> list[list[str]]:
    cmds = []
    for line in _lines(text):
        if line.startswith("editaudit "):
            line = line.split(">")[0].split("||")[0]
            cmds.append(shlex.split(line.replace("${{ inputs.edit_id }}", "EDIT").replace("$EDIT_ID", "EDIT")))
    return cmds


def _context(argv: list[str]) -> click.Context:
    """Parse and validate the options exactly as the CLI would, without calling a server."""
    assert argv[0] == "editaudit"
    command, args = cli, argv[1:]
    while isinstance(command, click.Group):
        command, args = command.commands[args[0]], args[1:]
    return command.make_context(command.name, args)


def test_examples_parse_and_use_valid_flags():
    for name in EXAMPLES:
        text = (ROOT / "examples" / name).read_text()
        yaml.safe_load(text)
        cmds = _editaudit_commands(text)
        assert any(argv[1] == "gate" for argv in cmds), name
        for argv in cmds:
            ctx = _context(argv)
            assert ctx.params["edit_id"] == "EDIT" and ctx.params["policy"] == "default", (name, argv)
    gh = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text())
    steps = gh["jobs"]["gate"]["steps"]
    assert any("upload-artifact" in s.get("uses", "") for s in steps)
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in steps)
    assert any(s.get("run", "").startswith("editaudit promote") for s in steps), "promotion through the CLI"
    gl = yaml.safe_load((ROOT / "examples" / "gitlab-ci.yml").read_text())
    assert gl["editaudit-gate"]["artifacts"]["reports"]["junit"] == "gate-junit.xml"


def test_examples_install_the_cli_from_the_repository_without_torch():
    for name in EXAMPLES:
        text = (ROOT / "examples" / name).read_text()
        installs = [line for line in _lines(text) if "pip install" in line]
        assert installs, name
        for line in installs:
            assert not TORCH.search(line), (name, line)
            # never the bare name: a package called `editaudit` on an index is not necessarily this one
            assert re.search(r'"editaudit @ git\+https://github\.com/[^/]+/editaudit@\$\{EDITAUDIT_REF\}"', line), line
        assert "EDITAUDIT_API_KEY" in text and "EDITAUDIT_API_TOKEN" not in text, name
    gh = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text())
    assert gh["jobs"]["gate"]["env"]["EDITAUDIT_API_KEY"] == "${{ secrets.EDITAUDIT_API_KEY }}"


def test_the_base_install_has_no_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if TORCH.search(d)]
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["worker"])
