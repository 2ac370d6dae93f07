"""Markdown tables from tidy frames."""

from __future__ import annotations

import math

import pandas as pd


def format_number(value: object, digits: int = 3) -> str:
    """Numbers in `digits` significant figures (scientific when small or large), others as is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "–"
    if value != 0 and not 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table of `frame` (index dropped), numbers right-aligned."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    align = "|" + "|".join(
        "---:" if pd.api.types.is_numeric_dtype(frame[c]) else ":---" for c in frame.columns
    ) + "|"
    rows = [
        "| " + " | ".join(format_number(v, digits) for v in row) + " |"
        for row in frame.astype(object).itertuples(index=False)
    ]
    return "\n".join([header, align, *rows])
