"""LaTeX tables from tidy frames: booktabs rules, plain numbers, escaped text."""

from __future__ import annotations

import re

import pandas as pd

from estimator_lab.reporting.markdown import format_number

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_SPECIAL_PATTERN = re.compile("[" + re.escape("".join(_SPECIAL)) + "]")
_LABEL_PATTERN = re.compile(r"[A-Za-z0-9:._\-]+")


def latex_escape(text: str) -> str:
    r"""`text` with the ten LaTeX special characters made literal (one pass, no double escapes).

    Example:
        >>> print(latex_escape(r"50% of x_1 & {y} costs $3 #2"))
        50\% of x\_1 \& \{y\} costs \$3 \#2
        >>> print(latex_escape(r"~ a^b \ c"))
        \textasciitilde{} a\textasciicircum{}b \textbackslash{} c
    """
    return _SPECIAL_PATTERN.sub(lambda match: _SPECIAL[match.group()], text)


def latex_inline(text: str) -> str:
    r"""Escaped plain text in which Markdown code spans (`` `x` ``) become `\texttt{x}`.

    Example:
        >>> print(latex_inline("variance of `st_gumbel` in %"))
        variance of \texttt{st\_gumbel} in \%
    """
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick is literal
        return latex_escape(text)
    return "".join(
        rf"\texttt{{{latex_escape(part)}}}" if i % 2 else latex_escape(part)
        for i, part in enumerate(parts)
    )


def latex_table(
    frame: pd.DataFrame,
    *,
    caption: str,
    label: str,
    digits: int = 3,
    column_format: str | None = None,
) -> str:
    r"""A booktabs `table` environment of `frame` (index dropped).

    Numbers are written as in the Markdown tables (`format_number`: `digits` significant
    figures, scientific outside `[1e-3, 1e5)`, `–` for NaN); every other cell, the column names
    and the caption are escaped, with Markdown code spans in the caption set in `\texttt`.
    The document needs `\usepackage{booktabs}` (and UTF-8 input, the LaTeX default since 2018).

    Args:
        frame: the table's rows.
        caption: plain text (code spans allowed).
        label: the `\label` key, letters, digits and `:._-` only (e.g. `tab:summary`).
        digits: significant figures of floating-point cells.
        column_format: the `tabular` column specification; default `r` for numeric columns,
            `l` for the others.

    Returns:
        the LaTeX source, ending in a newline.

    Raises:
        ValueError: `label` holds characters LaTeX labels cannot.

    Example:
        >>> frame = pd.DataFrame({"estimator": ["st_gumbel"], "variance": [0.012345]})
        >>> print(latex_table(frame, caption="Variance", label="tab:v"), end="")
        \begin{table}[htbp]
        \centering
        \caption{Variance}
        \label{tab:v}
        \begin{tabular}{lr}
        \toprule
        estimator & variance \\
        \midrule
        st\_gumbel & 0.0123 \\
        \bottomrule
        \end{tabular}
        \end{table}
    """
    if not _LABEL_PATTERN.fullmatch(label):
        raise ValueError(f"LaTeX label {label!r} may only hold letters, digits and ':._-'")
    if column_format is None:
        column_format = "".join(
            "r" if pd.api.types.is_numeric_dtype(frame[c]) else "l" for c in frame.columns
        )
    header = " & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\"
    rows = [
        " & ".join(latex_escape(format_number(v, digits)) for v in row) + r" \\"
        for row in frame.astype(object).itertuples(index=False)
    ]
    return "\n".join([
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_inline(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{column_format}}}",
        r"\toprule",
        header,
        r"\midrule",
        *rows,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ])
