"""Code versions for honest re-runs (memaudit.provenance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memaudit import provenance
from memaudit.provenance import code_version, module_closure, package_imports


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
    assert package_imports(source) == {"x", "y", "u", "v"}


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
    for name in ("reports", "corpus", "training", "scoring", "thresholding", "share"):
        assert len(code_version(name)) == 16
