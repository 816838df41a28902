"""Config validation: JSON-Schema with defaults filled in, and messages that name the key."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


def _key(path: Iterable[Any]) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in path]
    return ".".join(parts).replace(".[", "[") or "<top level>"


def _fill_defaults(instance: Any, schema: dict[str, Any]) -> None:
    """Insert schema defaults for absent keys, recursively (objects only)."""
    if not isinstance(instance, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance and isinstance(instance[name], dict):
            _fill_defaults(instance[name], sub)


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def validate_config(config: dict[str, Any], schema: dict[str, Any], source: str = "config") -> dict:
    """Return a copy of ``config`` with defaults filled in, or raise :class:`ConfigError`.

    Every problem is listed, each as ``<source>: key 'a.b': <what is wrong>``.
    """
    filled = copy.deepcopy(config) if config is not None else {}
    _fill_defaults(filled, schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for error in errors:
            if error.validator == "additionalProperties":
                allowed = sorted(error.schema.get("properties", {}))
                unknown = sorted(set(error.instance) - set(allowed))
                for name in unknown:
                    key = _key([*error.absolute_path, name])
                    lines.append(
                        f"{source}: unknown key '{key}' (allowed here: {', '.join(allowed)})"
                    )
                continue
            lines.append(f"{source}: key '{_key(error.absolute_path)}': {error.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return filled


def check_paths(entries: dict[str, str | None], produced: Iterable[str] = ()) -> None:
    """Fail when a configured input path does not exist and no rule of the workflow makes it.

    ``entries`` maps a config key (e.g. ``reports.path``) to its value; ``produced`` lists paths
    that workflow rules write (the demo corpus, the demo model).
    """
    produced = {str(Path(p)) for p in produced}
    missing = []
    for key, value in entries.items():
        if value is None or str(Path(value)) in produced:
            continue
        if not Path(value).exists():
            missing.append(f"config: key '{key}': path '{value}' does not exist")
    if missing:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(missing))
