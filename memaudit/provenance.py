"""Code versions of the package modules a workflow rule runs, for honest incremental re-runs.

Snakemake re-runs a rule when its script changes, but not when a package module that the script
imports changes. Rules therefore carry ``params: code=code_version("scoring.engine")``: a hash of
the module's source *and of every memaudit module it imports, transitively*, so an edit anywhere
in the code a stage runs re-runs that stage (and what depends on its outputs), while an edit in
an unrelated module re-runs nothing. This is why figures live in their own ``figures`` modules
that no computing module imports: a plot edit changes only the plot rules' versions.

Names are dotted paths below ``memaudit``: ``"scoring.engine"`` is one module; ``"scoring"``
requested directly is the whole subpackage (every module in it), while ``"scoring"`` reached
through an import is only its ``__init__.py`` (which is what Python runs). Importing
``memaudit.a.b`` also runs ``a/__init__.py``, so that file joins the closure.

Hashing contents rather than using the files as inputs means a checkout or a copy of the
repository (new mtimes, new absolute paths) re-runs nothing by itself.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "memaudit"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_path(name: str, package_dir: Path) -> Path:
    """The file of module ``name`` (a package's ``__init__.py``); ValueError if none."""
    base = package_dir.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    raise ValueError(f"{PACKAGE} has no module {name!r} (looked for {base}.py and {base}/)")


def subpackage_modules(name: str, package_dir: Path) -> list[str]:
    """Every module of subpackage ``name`` (its ``__init__`` as ``name``), or just ``name``."""
    folder = package_dir.joinpath(*name.split("."))
    if not (folder / "__init__.py").is_file():
        module_path(name, package_dir)  # raises if there is no such module
        return [name]
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def package_imports(source: str) -> set[str]:
    """Dotted names (below ``memaudit``) that a module's source imports, at any place in it.

    ``from memaudit.a.b import x`` gives ``a.b`` and the candidate ``a.b.x`` (``x`` may be a
    submodule); ``import memaudit.a.b`` gives ``a.b``; ``from memaudit import a`` gives ``a``.
    Candidates that are not modules are dropped by :func:`module_closure`.
    """
    found: set[str] = set()
    for node in _import_statements(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != PACKAGE or node.level:
                continue
            prefix = ".".join(parts[1:])
            if prefix:
                found.add(prefix)
            found.update(f"{prefix}.{a.name}" if prefix else a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(".".join(parts[1:]))
    return found


def _import_statements(tree: ast.AST):
    """Every import statement of a module, at any depth (function and class bodies, branches,
    handlers, match cases): a walk over statement lists only, as expressions hold none."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack.extend(getattr(node, field, None) or ())


def _is_module(name: str, package_dir: Path) -> bool:
    try:
        module_path(name, package_dir)
    except ValueError:
        return False
    return True


def module_closure(names: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The given modules (subpackages expanded), the package modules they import and the
    ``__init__`` of every package on the way, transitively, sorted."""
    seen: set[str] = set()
    todo = [m for name in names for m in subpackage_modules(name, package_dir)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        todo.extend(sorted((_module_imports(name, package_dir) | set(parents)) - seen))
    return sorted(seen)


@cache
def _module_imports(name: str, package_dir: Path) -> frozenset[str]:
    """The package modules that module ``name`` imports directly, parsed once per process
    (every rule's closure walks the same modules; a workflow parse asks for ~40 closures)."""
    source = module_path(name, package_dir).read_text(encoding="utf-8")
    return frozenset(m for m in package_imports(source) if _is_module(m, package_dir))


@cache
def _cached_version(names: tuple[str, ...], package_dir: str) -> str:
    digest = hashlib.sha256()
    for name in module_closure(names, Path(package_dir)):
        digest.update(name.encode() + b"\0")
        digest.update(module_path(name, Path(package_dir)).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_version(*names: str, package_dir: str | Path = PACKAGE_DIR) -> str:
    """A 16-hex-digit hash of the modules ``names`` and the package modules they import.

    Same sources, same hash, on every machine and in every checkout location.
    """
    if not names:
        raise ValueError("code_version needs at least one module name")
    return _cached_version(tuple(sorted(set(names))), str(Path(package_dir).resolve()))


def script_modules(script: str | Path) -> tuple[str, ...]:
    """The package modules a workflow script imports (the roots of its code version)."""
    source = Path(script).read_text(encoding="utf-8")
    return tuple(sorted(m for m in package_imports(source) if _is_module(m, PACKAGE_DIR)))


def script_code_version(script: str | Path) -> str:
    """The code version of everything a workflow script imports from the package: the list
    is read from the script itself, so it cannot drift from what the rule really runs."""
    modules = script_modules(script)
    if not modules:
        raise ValueError(f"{script} imports nothing from {PACKAGE}")
    return code_version(*modules)
