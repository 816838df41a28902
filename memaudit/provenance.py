"""Code versions of the package modules a workflow rule runs, for honest incremental re-runs.

Snakemake re-runs a rule when its script changes, but not when a package module that the script
imports changes. Rules therefore carry ``params: code=code_version("scoring")``: a hash of the
module's source *and of every memaudit module it imports, transitively*, so an edit anywhere
in the code a stage runs re-runs that stage (and what depends on its outputs), while an edit in
an unrelated stage's module re-runs nothing. Hashing contents rather than using the files as
inputs means a checkout or a copy of the repository (new mtimes, new absolute paths) re-runs
nothing by itself.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "memaudit"
PACKAGE_DIR = Path(__file__).resolve().parent


def _module_path(name: str, package_dir: Path) -> Path:
    path = package_dir / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"{PACKAGE} has no module {name!r} (looked for {path})")
    return path


def package_imports(source: str) -> set[str]:
    """Names of the ``memaudit`` modules a module's source imports (``from memaudit.x import``,
    ``import memaudit.x``, ``from memaudit import x``), at any place in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != PACKAGE or node.level:
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from memaudit import x, y
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
    return found


def module_closure(names: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The given modules and every package module they import, transitively, sorted."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = _module_path(name, package_dir).read_text(encoding="utf-8")
        todo.extend(sorted(package_imports(source) - seen))
    return sorted(seen)


@cache
def _cached_version(names: tuple[str, ...], package_dir: str) -> str:
    digest = hashlib.sha256()
    for name in module_closure(names, Path(package_dir)):
        digest.update(name.encode() + b"\0")
        digest.update(_module_path(name, Path(package_dir)).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_version(*names: str, package_dir: str | Path = PACKAGE_DIR) -> str:
    """A 16-hex-digit hash of the modules ``names`` and the package modules they import.

    Same sources, same hash, on every machine and in every checkout location.
    """
    if not names:
        raise ValueError("code_version needs at least one module name")
    return _cached_version(tuple(sorted(set(names))), str(Path(package_dir).resolve()))
