"""Fixtures shared by unit-test modules (module-level fixtures of the same name win)."""

from tests.unit.attribution_fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    bert_tokenizer,
    model,
    model64,
    selection,
)
