"""Pure pieces of the CLI: one set of format names (with their aliases), the server's suggestions in a problem, a
refused promotion explained reason first, and the file references of an edit request."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from editaudit.cli.common import FormatType, canonical_format, exit_code_for, output_options, problem_lines
from editaudit.cli.gate import explain_refusal
from editaudit.cli.refs import RefError, references, resolve
from editaudit.client import ApiError


@pytest.mark.parametrize("given, name", [("md", "markdown"), ("MD", "markdown"), ("markdown", "markdown"),
                                         ("xml", "junit"), ("junit", "junit"), ("json", "json"), ("html", "html"),
                                         ("table", "table"), ("text", "table")])
def test_format_names_and_their_aliases(given, name):
    assert canonical_format(given) == name
    assert FormatType(("table", "json", "markdown", "junit", "html")).convert(given, None, None) == name


def test_a_format_the_command_lacks_is_a_usage_error_naming_what_it_has():
    with pytest.raises(click.BadParameter, match="not one of table, json"):
        FormatType(("table", "json")).convert("xml", None, None)


def _command():
    @click.command()
    @output_options(("table", "json", "markdown", "junit", "html"))
    def report(fmt, output):
        click.echo(f"{fmt} {output}")

    return report


@pytest.mark.parametrize("args, out", [([], "table None"), (["--json"], "json None"), (["--format", "md"],
                                        "markdown None"), (["-o", "r.xml"], "junit r.xml"),
                                       (["-o", "r.md"], "markdown r.md"), (["-o", "r.bin"], "table r.bin"),
                                       (["-o", "-", "--format", "xml"], "junit None"),
                                       (["--output", "r.html", "--format", "json"], "json r.html")])
def test_output_options_pick_the_format_from_the_flag_or_the_suffix(args, out):
    r = CliRunner().invoke(_command(), args)
    assert r.exit_code == 0 and r.output.strip() == out, r.output


def test_json_and_another_format_contradict():
    r = CliRunner().invoke(_command(), ["--json", "--format", "md"])
    assert r.exit_code == 2 and "contradict" in r.output  # click's own usage exit code; the root command maps it to 4


def problem(status: int, detail: str, errors=None, **extra) -> ApiError:
    return ApiError(status, {"status": status, "detail": detail, **({"errors": errors} if errors else {}), **extra})


def test_the_servers_suggestions_are_printed_with_their_field():
    e = problem(422, "unknown layer 'fc3' for editaudit/smallcnn",
                [{"field": "layers.0", "reason": "unknown layer 'fc3'"}], closest=["fc1", "fc"])
    assert problem_lines(e) == ["error: unknown layer 'fc3' for editaudit/smallcnn",
                                "  layers.0: unknown layer 'fc3' (did you mean: fc1, fc?)"]
    per_error = problem(422, "2 problems", [{"field": "a", "reason": "bad", "closest": ["x"]},
                                            {"field": "b", "reason": "worse", "valid": ["p", "q"]}])
    assert problem_lines(per_error)[1:] == ["  a: bad (did you mean: x?)", "  b: worse (valid: p, q)"]
    many = problem(422, "unknown method", [{"field": "method", "reason": "unknown method"}],
                   valid=[f"m{i}" for i in range(20)])
    assert problem_lines(many)[1].endswith("m11, … 8 more)")
    loose = problem(422, "no such thing", closest=["thing"])
    assert problem_lines(loose) == ["error: no such thing", "  did you mean: thing?"]
    plain = problem(404, "no edit 'x'", [{"field": "edit_id", "reason": "no edit 'x'"}])
    assert problem_lines(plain) == ["error: no edit 'x'"], "a field line only when it adds something"


def test_exit_codes_for_problems():
    assert exit_code_for(problem(404, "no edit", [{"field": "edit_id", "reason": "x"}])) == 3
    assert exit_code_for(problem(409, "running", [{"field": "edit_id", "reason": "x"}])) == 3
    assert exit_code_for(problem(404, "no policy", [{"field": "name", "reason": "x"}])) == 4
    assert exit_code_for(problem(409, "built-in name", [{"field": "name", "reason": "x"}])) == 4
    assert exit_code_for(problem(409, "refused", [{"field": "edit_id", "reason": "x"}], gate={})) == 1
    assert exit_code_for(problem(422, "bad", [{"field": "audit.attacks.0.eps", "reason": "x"}])) == 2
    assert exit_code_for(problem(503, "database down")) == 2


def rule(metric: str, outcome: str) -> dict:
    return {"rule": "min 0.9", "metric": metric, "baseline": 0.9, "candidate": 0.95 if outcome == "pass" else 0.5,
            "delta": None, "threshold": 0.9, "p_value": None, "outcome": outcome, "reason": f"{metric} {outcome}",
            "n": None, "bound": None, "decision": None, "lenient": False, "undecided": False, "samples_needed": None}


MOVED = ("the edit was audited against model M0, but 'production' serves M1: its numbers say nothing about "
         "replacing M1 (edit M1 instead, or give override_reason)")


def refusal(rules: list[dict], notes: list[str]) -> ApiError:
    gate = {"edit_id": "E", "audit_id": "A", "policy": {"name": "strict"}, "verdict": "fail", "rules": rules,
            "notes": notes}
    detail = ("the gate fails for edit E; not promoted to 'production' (give override_reason to ship anyway; it is "
              "recorded)" + "".join(f"; {n}" for n in notes))
    return problem(409, detail, [{"field": "edit_id", "reason": detail}], gate=gate)


def test_a_refusal_by_the_gate_says_so_first_with_only_the_failing_rules():
    text = explain_refusal(refusal([rule("edit.accuracy", "pass"), rule("test.accuracy", "fail"),
                                    rule("test.adv.pgd.accuracy", "fail")], []))
    lines = text.splitlines()
    assert lines[0] == "error: gate failed: 2 rules block (policy strict); edit E not promoted to 'production'"
    table = text.split("verdict:")[0]
    assert "test.accuracy" in table and "test.adv.pgd.accuracy" in table and "edit.accuracy" not in table
    assert "verdict: BLOCKED" in text and "1 other rule passed or warned" in text


def test_a_refusal_because_the_alias_moved_says_so_first_without_a_table():
    text = explain_refusal(refusal([rule("edit.accuracy", "pass")], [MOVED]))
    lines = text.splitlines()
    assert lines[0] == ("error: the alias 'production' moved since edit E was made: it serves model M1, the edit "
                        "was audited against model M0; not promoted")
    assert "edit model M1 instead" in lines[1]
    assert "gate fails" not in text and "verdict" not in text and "edit.accuracy" not in text
    both = explain_refusal(refusal([rule("edit.accuracy", "pass"), rule("test.accuracy", "fail")], [MOVED]))
    assert both.splitlines()[0].startswith("error: the alias 'production' moved")
    assert "also, the gate fails: 1 rule blocks (policy strict)" in both and "test.accuracy" in both
    assert MOVED not in both, "the note is said once, in words, not repeated under the table"


class FakeApi:
    """Stands in for the client's two upload calls (the end-to-end test uses the real server)."""

    def __init__(self):
        self.calls = []

    def upload_model(self, path, spec):
        self.calls.append(("model", path.name, spec))
        return {"id": f"m-{path.stem}", "arch": spec["arch"], "sha256": "0" * 64}

    def upload_dataset(self, path):
        self.calls.append(("dataset", path.name))
        return {"id": f"d-{path.stem}", "n": 8, "sha256": "1" * 64}


def test_file_references_are_uploaded_once_and_replaced_by_ids(tmp_path):
    for name in ("model.safetensors", "edit-set.npz", "keep.npz"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "model.json").write_text(json.dumps({"arch": "editaudit/smallcnn"}))
    body = {"model_id": "@model.safetensors", "method": "finetune_layer", "edit_set": "@edit-set.npz",
            "generalization_set": "@edit-set.npz", "test_set": "builtin:digits-test",
            "hyperparams": {"locality_set": "@keep.npz", "inner": {"reference_set": "@keep.npz"}, "rank": 1}}
    assert references(body) == {"model_id": "model.safetensors", "edit_set": "edit-set.npz",
                                "generalization_set": "edit-set.npz", "hyperparams.locality_set": "keep.npz",
                                "hyperparams.inner.reference_set": "keep.npz"}
    api, log = FakeApi(), []
    out = resolve(body, tmp_path, api, log=log.append)
    assert out == {**body, "model_id": "m-model", "edit_set": "d-edit-set", "generalization_set": "d-edit-set",
                   "hyperparams": {"locality_set": "d-keep", "inner": {"reference_set": "d-keep"}, "rank": 1}}
    assert api.calls == [("model", "model.safetensors", {"arch": "editaudit/smallcnn"}),
                         ("dataset", "edit-set.npz"), ("dataset", "keep.npz")]
    assert len(log) == 3 and body["model_id"] == "@model.safetensors", "the body itself is left as it was"


def test_a_missing_file_or_spec_is_a_usage_error_before_any_upload(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    api = FakeApi()
    with pytest.raises(RefError, match="edit_set: '@nope.npz': no such file"):
        resolve({"model_id": "m", "edit_set": "@nope.npz"}, tmp_path, api)
    with pytest.raises(RefError, match="needs its model spec in model.json"):
        resolve({"model_id": "@model.safetensors", "edit_set": "builtin:digits-test"}, tmp_path, api)
    assert api.calls == []
    assert references({"model_id": "m1", "edit_set": "ds1", "method": "@not-a-slot"}) == {}
