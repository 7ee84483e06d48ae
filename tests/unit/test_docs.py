"""The README is a front door and the manual holds together: size, links that resolve, and the demo's figures stated
once (docs/benchmarks.md, from `editaudit demo`) and repeated identically wherever they appear."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?!https?://|mailto:)([^)#\s]+)(#[^)\s]*)?\)")


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_bytes()) <= 10_000


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for target, _anchor in LINK.findall(page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def _demo_figures() -> dict[str, str]:
    """The demo's run time and headline accuracies as docs/benchmarks.md records them."""
    text = (ROOT / "docs" / "benchmarks.md").read_text().split("## The demo", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| `([\w.]+)`[^|]*\| ([\d.]+) \| ([\d.]+) \|", text, flags=re.M)}
    figures = {"seconds": re.search(r"\*\*(\d+) s\*\* wall clock", text).group(1)}
    for metric in ("test.accuracy", "generalization.accuracy", "edit.accuracy"):
        before, after = rows[metric]
        figures[metric] = f"{float(before):.3f} | {float(after):.3f}"
    return figures


def test_the_demo_figures_agree_everywhere():
    figures = _demo_figures()
    readme = (ROOT / "README.md").read_text()
    for metric in ("test.accuracy", "generalization.accuracy", "edit.accuracy"):
        assert figures[metric] in readme, (metric, figures[metric])
    seconds = f"{figures['seconds']} s"
    cli_help = "".join((ROOT / "editaudit" / "cli" / name).read_text() for name in ("server.py", "main.py"))
    for where, text in (("README.md", readme), ("the CLI's help", cli_help)):
        stated = set(re.findall(r"(\d+) s on (?:a )?2[- ]C(?:PU|ore)", text, flags=re.I))
        assert stated == {figures["seconds"]}, (where, stated, seconds)
