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


def format_interval(value: object, low: object, high: object, digits: int = 3) -> str:
    """`value [low, high]` in `format_number`'s figures; the value alone where a bound is NaN.

    Example:
        >>> format_interval(7.58, 0.0, 12.1)
        '7.58 [0, 12.1]'
        >>> format_interval(0.5, float("nan"), float("nan"))
        '0.5'
    """
    text = format_number(value, digits)
    if any(isinstance(b, float) and math.isnan(b) for b in (low, high)):
        return text
    return f"{text} [{format_number(low, digits)}, {format_number(high, digits)}]"


def interval_columns(frame: pd.DataFrame, columns: list[str], digits: int = 3) -> pd.DataFrame:
    """`frame` with each of `columns` written as `value [low, high]` (`format_interval`) from
    its `<column>_low` and `<column>_high` columns, which are dropped if present in `frame`.

    Args:
        frame: rows with each `column` and its two bound columns.
        columns: the value columns to write with their intervals.
        digits: significant figures.

    Raises:
        ValueError: a value or bound column is missing.
    """
    missing = [c for v in columns for c in (v, f"{v}_low", f"{v}_high") if c not in frame]
    if missing:
        raise ValueError(f"interval_columns needs column(s) {', '.join(map(repr, missing))}")
    written = frame.drop(columns=[f"{v}{s}" for v in columns for s in ("_low", "_high")])
    for value in columns:
        written[value] = [format_interval(v, lo, hi, digits) for v, lo, hi in zip(
            frame[value], frame[f"{value}_low"], frame[f"{value}_high"], strict=True)]
    return written


def noise_note(frame: pd.DataFrame, column: str, digits: int = 3) -> str:
    """A sentence naming the rows whose `column` is positive while its interval reaches 0 (the
    figure is then Monte Carlo noise at these draws), or `""` when there are none.

    Args:
        frame: rows with `estimator`, `parameter`, `column`, `<column>_low` and
            `<column>_high`.
        column: e.g. `relative_bias` or `snr`.
        digits: significant figures of the values quoted.

    Example:
        >>> rows = pd.DataFrame({"estimator": ["reinforce", "st"], "parameter": ["w", "w"],
        ...                      "relative_bias": [7.58, 3.0], "relative_bias_low": [0.0, 2.9],
        ...                      "relative_bias_high": [12.1, 3.1]})
        >>> print(noise_note(rows, "relative_bias"))  # doctest: +NORMALIZE_WHITESPACE
        `relative_bias` is Monte Carlo noise at these draws (its 95% interval reaches 0)
        for `reinforce` `w` (7.58 [0, 12.1]).
    """
    noisy = frame[(frame[column] > 0) & (frame[f"{column}_low"] == 0)]
    if noisy.empty:
        return ""
    rows = "; ".join(
        f"`{r.estimator}` `{r.parameter}` ("
        f"{format_interval(getattr(r, column), 0.0, getattr(r, f'{column}_high'), digits)})"
        for r in noisy.itertuples())
    return (f"`{column}` is Monte Carlo noise at these draws (its 95% interval reaches 0) "
            f"for {rows}.")
