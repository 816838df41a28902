"""Code versions for honest re-runs (memaudit.provenance)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from memaudit import provenance
from memaudit.provenance import PACKAGE_DIR, code_version, module_closure, package_imports


def _package(root: Path) -> Path:
    pkg = root / "memaudit"
    pkg.mkdir()
    (pkg / "a.py").write_text("from memaudit.b import f\nimport numpy\n")
    (pkg / "b.py").write_text("def f():\n    from memaudit import c\n")
    (pkg / "c.py").write_text("X = 1\n")
    (pkg / "d.py").write_text("import memaudit.c\n")
    return pkg


def test_imports_are_found_in_every_form() -> None:
    source = "import memaudit.x\nfrom memaudit.y import z\nfrom memaudit import u, v\nimport os\n"
    # ``from memaudit.y import z``: z may be a submodule of y (kept only if it is a module)
    assert package_imports(source) == {"x", "y", "y.z", "u", "v"}


def test_imports_nested_anywhere_are_found_as_a_full_walk_finds_them() -> None:
    source = (
        "try:\n    import memaudit.a\nexcept ImportError:\n    from memaudit.b import c\n"
        "else:\n    pass\nfinally:\n    import memaudit.d\n"
        "class K:\n    def f(self):\n        with open('x') as h:\n"
        "            for i in h:\n                if i:\n                    import memaudit.e\n"
        "match 1:\n    case 1:\n        from memaudit import g\n"
        "while False:\n    pass\nelse:\n    import memaudit.h\n"
    )
    assert package_imports(source) == {"a", "b", "b.c", "d", "e", "g", "h"}
    # On the package itself: the statement walk finds what a walk over every node finds.
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text())
        full = {n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)}
        assert set(provenance._import_statements(tree)) == full, path


def test_closure_is_transitive(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    assert module_closure(("a",), pkg) == ["a", "b", "c"]
    assert module_closure(("d",), pkg) == ["c", "d"]


def test_version_follows_imported_code_only(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    before_a, before_d = code_version("a", package_dir=pkg), code_version("d", package_dir=pkg)
    (pkg / "b.py").write_text("def f():\n    from memaudit import c\n    return 2\n")
    provenance._cached_version.cache_clear()
    assert code_version("a", package_dir=pkg) != before_a  # a imports b
    assert code_version("d", package_dir=pkg) == before_d  # d does not


def test_version_is_independent_of_location(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    one, two = _package(tmp_path / "x"), _package(tmp_path / "y")
    assert code_version("a", package_dir=one) == code_version("a", package_dir=two)


def test_unknown_module_is_named() -> None:
    with pytest.raises(ValueError, match="no module 'nosuch'"):
        code_version("nosuch")


def test_every_stage_module_has_a_version() -> None:
    for name in ("prompts", "corpus", "model", "scoring", "threshold", "evaluation", "share"):
        assert len(code_version(name)) == 16


def _subpackage(root: Path) -> Path:
    pkg = root / "memaudit"
    (pkg / "stage").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stage" / "__init__.py").write_text('"""A stage."""\n')
    (pkg / "stage" / "engine.py").write_text("from memaudit.common import helper\n")
    (pkg / "stage" / "figures.py").write_text("from memaudit.stage.engine import x\n")
    (pkg / "common.py").write_text("def helper(): ...\n")
    return pkg


def test_subpackage_modules_and_their_package_init_are_hashed(tmp_path: Path) -> None:
    pkg = _subpackage(tmp_path)
    # one module: itself, what it imports, and the __init__ Python runs on the way
    assert module_closure(("stage.engine",), pkg) == ["common", "stage", "stage.engine"]
    # a whole subpackage, requested directly: every module in it
    assert module_closure(("stage",), pkg) == [
        "common",
        "stage",
        "stage.engine",
        "stage.figures",
    ]


def test_a_figure_edit_changes_only_the_figure_version(tmp_path: Path) -> None:
    pkg = _subpackage(tmp_path)
    engine, figures = (code_version(m, package_dir=pkg) for m in ("stage.engine", "stage.figures"))
    (pkg / "stage" / "figures.py").write_text("from memaudit.stage.engine import x\nY = 2\n")
    provenance._cached_version.cache_clear()
    assert code_version("stage.engine", package_dir=pkg) == engine
    assert code_version("stage.figures", package_dir=pkg) != figures


def test_script_version_follows_the_scripts_own_imports(tmp_path: Path) -> None:
    script = tmp_path / "plot.py"
    script.write_text("from memaudit.plotting import save_figure\n")
    assert provenance.script_modules(script) == ("plotting",)
    assert provenance.script_code_version(script) == code_version("plotting")
    (tmp_path / "none.py").write_text("import os\n")
    with pytest.raises(ValueError, match="imports nothing"):
        provenance.script_code_version(tmp_path / "none.py")


def test_no_computing_module_imports_plotting() -> None:
    """Figures apart from computation: only figure modules reach plotting code."""
    for path in sorted(provenance.PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(provenance.PACKAGE_DIR).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if parts[-1] == "__init__":  # a package's __init__ imports nothing (it runs on import)
            assert not provenance.package_imports(path.read_text()), path
            continue
        if parts[-1] == "figures" or name == "plotting":
            continue
        closure = module_closure((name,))
        plotting = [m for m in closure if m == "plotting" or m.endswith(".figures")]
        source = path.read_text()
        assert not plotting, f"{name} imports figure code: {plotting}"
        assert "matplotlib" not in source and "seaborn" not in source, name
