"""Table checks and constructors shared by the stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd


def require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """ValueError naming ``what`` and the columns of ``columns`` that ``table`` lacks."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"the {what} lacks column(s) {missing}")


def typed_frame(rows: list[dict[str, Any]], schema: Mapping[str, Any]) -> pd.DataFrame:
    """A table with exactly the schema's columns and dtypes (also when ``rows`` is empty)."""
    data = {}
    for column, dtype in schema.items():
        values = [row[column] for row in rows]
        data[column] = pd.Series(values, dtype=dtype) if values else pd.Series([], dtype=dtype)
    return pd.DataFrame(data, columns=list(schema))
