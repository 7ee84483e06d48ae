"""tests/tools/typecheck.py lays the tree out as Python imports it and maps mypy's paths back to the repository's."""

from tests.tools.typecheck import REPO, build_tree, map_line, repo_path, tree_path


def test_the_link_tree_is_shaped_like_the_installed_package(tmp_path):
    root = build_tree(root=tmp_path / "tree")
    assert (root / "editaudit" / "service" / "app.py").resolve() == REPO / "service" / "app.py"
    assert (root / "editaudit" / "worker" / "ml" / "impl.py").resolve() == REPO / "worker" / "ml" / "impl.py"
    assert (root / "editaudit" / "migrations" / "env.py").resolve() == REPO / "migrations" / "env.py"
    assert (root / "editaudit" / "gate" / "policy.py").resolve() == REPO / "editaudit" / "gate" / "policy.py"
    assert (root / "tests" / "conftest.py").resolve() == REPO / "tests" / "conftest.py"
    assert not (root / "editaudit" / "__pycache__").exists()


def test_paths_map_both_ways():
    for repo, tree in [("service/app.py", "editaudit/service/app.py"), ("worker", "editaudit/worker"),
                       ("migrations/versions/x.py", "editaudit/migrations/versions/x.py"),
                       ("bench/audit.py", "scripts/bench/audit.py"), ("editaudit/gate/policy.py", None),
                       ("tests/conftest.py", None), ("workers/x.py", None)]:
        assert tree_path(repo) == (tree or repo)
        assert repo_path(tree or repo) == repo


def test_findings_name_the_repositorys_files():
    line = 'editaudit/worker/ml/impl.py:12: error: Name "x" is not defined  [name-defined]'
    assert map_line(line) == 'worker/ml/impl.py:12: error: Name "x" is not defined  [name-defined]'
    assert map_line("Found 1 error in 1 file (checked 3 source files)") == \
        "Found 1 error in 1 file (checked 3 source files)"
