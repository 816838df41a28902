"""Config validation and the one source of truth for settings: the workflow's JSON Schema.

The schema (``workflow/schemas/config.schema.yaml``) holds every key's type, description and
default. :func:`validate_config` checks a config against it and fills in the defaults;
:func:`schema_defaults` hands the same defaults to the Spec dataclasses of the stages, so a
default changed in the schema changes the Spec; :func:`spec_from_dict` builds any Spec from
its config block with one set of checks; :func:`coerce_cli_config` turns Snakemake's
command-line strings into the schema's types before validation.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

# The package is run from a checkout of the repository (the workflow imports it from there), so
# the schema is found next to the package rather than copied into it: one file, one truth.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

SpecT = TypeVar("SpecT")


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


# --------------------------------------------------------------------------------------------
# Defaults for the Spec classes
# --------------------------------------------------------------------------------------------


@cache
def config_schema() -> dict[str, Any]:
    """The workflow's config schema, read once per process."""
    if not SCHEMA_PATH.is_file():
        raise ConfigError(
            f"memaudit reads its settings' defaults from {SCHEMA_PATH}, which is missing: "
            "use the package from a checkout of the repository (pip install -e .)"
        )
    return load_schema(SCHEMA_PATH)


def _frozen(value: Any) -> Any:
    """Lists as tuples, recursively: dataclass defaults must be immutable."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class SchemaDefaults(Mapping[str, Any]):
    """The defaults of one config block, read-only; a missing key names the block and key."""

    def __init__(self, block: str, values: dict[str, Any]) -> None:
        self.block = block
        self._values = values

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(f"{SCHEMA_PATH.name} has no default for {self.block}.{key}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def schema_block(block: str) -> dict[str, Any]:
    """The schema node of a config block; ``block`` may be dotted (``copy_detection.network``)."""
    node = config_schema()
    for name in block.split("."):
        properties = node.get("properties", {})
        if name not in properties:
            raise KeyError(f"{SCHEMA_PATH.name} has no config block {block!r}")
        node = properties[name]
    return node


def schema_defaults(block: str) -> SchemaDefaults:
    """Every default of a config block, lists as tuples (e.g. ``schema_defaults("scoring")``).

    Keys without a default in the schema (required ones) are absent.
    """
    properties = schema_block(block).get("properties", {})
    values = {
        name: _frozen(copy.deepcopy(sub["default"]))
        for name, sub in properties.items()
        if "default" in sub
    }
    return SchemaDefaults(block, values)


# --------------------------------------------------------------------------------------------
# Spec construction
# --------------------------------------------------------------------------------------------


def check_keys(
    values: Mapping[str, Any], block: str, known: Iterable[str], ignored: Iterable[str] = ()
) -> dict[str, Any]:
    """The ``known`` entries of a config block; unknown keys are an error naming each one.

    ``ignored`` keys belong to the workflow (e.g. ``chunks``): accepted and dropped.
    """
    known, ignored = set(known), set(ignored)
    unknown = sorted(set(values) - known - ignored)
    if unknown:
        dotted = ", ".join(f"{block}.{name}" for name in unknown)
        raise ValueError(
            f"unknown {block} key(s) {unknown} ({dotted}); known keys: "
            f"{', '.join(sorted(known | ignored))}"
        )
    return {name: value for name, value in values.items() if name in known}


@cache
def _tuple_fields(cls: type) -> frozenset[str]:
    """Fields of dataclass ``cls`` annotated as a tuple (alone or in a union)."""
    hints = typing.get_type_hints(cls)
    found = set()
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        options = typing.get_args(hint) if _is_union(hint) else (hint,)
        if any(option is tuple or typing.get_origin(option) is tuple for option in options):
            found.add(field.name)
    return frozenset(found)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType)


def spec_from_dict(
    cls: type[SpecT],
    values: Mapping[str, Any] | None,
    block: str,
    ignored: Iterable[str] = (),
) -> SpecT:
    """Build Spec dataclass ``cls`` from its config block (``block`` names it in errors).

    Unknown keys are an error naming ``<block>.<key>``; ``ignored`` (workflow-only) keys are
    accepted and dropped; a list given for a tuple field becomes a tuple, as YAML has no tuples.
    The Spec's own ``__post_init__`` checks the values.
    """
    fields = [field.name for field in dataclasses.fields(cls)]
    kwargs = check_keys(dict(values or {}), block, fields, ignored)
    for name in _tuple_fields(cls) & set(kwargs):
        if isinstance(kwargs[name], list):
            kwargs[name] = tuple(kwargs[name])
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Command-line values
# --------------------------------------------------------------------------------------------


def _types(node: Mapping[str, Any]) -> list[str]:
    kind = node.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _has_type(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    return kind == "object" and isinstance(value, dict)


def _read_scalar(text: str, kinds: list[str]) -> Any:
    """``text`` as YAML reads it, or as a number where YAML 1.1 does not (``1e-3``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str) and ("number" in kinds or "integer" in kinds):
        for parse in (int, float):
            try:
                number = parse(text)
            except ValueError:
                continue
            if math.isfinite(number):
                return number
    return value


def _coerce(value: Any, node: Mapping[str, Any], path: tuple[Any, ...]) -> Any:
    if isinstance(value, Mapping):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        other = extra if isinstance(extra, dict) else {}
        return {
            name: _coerce(item, properties.get(name, other), (*path, name))
            for name, item in value.items()
        }
    if isinstance(value, list):
        items = node.get("items") if isinstance(node.get("items"), dict) else {}
        return [_coerce(item, items, (*path, i)) for i, item in enumerate(value)]
    kinds = _types(node)
    if not isinstance(value, str) or not kinds:
        return value  # typed already, or a key the schema does not know (validation names it)
    parsed = _read_scalar(value, kinds)
    if any(_has_type(parsed, kind) for kind in kinds):
        return parsed
    if "string" in kinds:
        return value
    raise ConfigError(
        f"invalid configuration:\n  --config: key '{_key(path)}': {value!r} cannot be read as "
        f"{' or '.join(kinds)} (command-line values are read as YAML)"
    )


def coerce_cli_config(values: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Command-line config values converted to the schema's types.

    Snakemake reads ``--config 'threshold={percentile: 95}'`` with YAML's base loader, so every
    nested value arrives as a string (``'95'``). Each string is read as YAML (``95``, ``null``,
    ``true``) and kept when the schema allows that type; otherwise it stays a string where the
    schema allows strings (a path named ``123``), else it is an error naming the key.
    """
    return _coerce(dict(values), schema, ())
