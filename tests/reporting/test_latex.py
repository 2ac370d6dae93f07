"""LaTeX tables: escaping of the ten special characters, booktabs layout, shared number format."""

import re

import numpy as np
import pandas as pd
import pytest

from estimator_lab.reporting import format_number, latex_escape, latex_inline, latex_table


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("{", r"\{"),
        ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"),
        ("\\", r"\textbackslash{}"),
        # one pass: the braces and backslashes it inserts are not escaped again
        ("\\&", r"\textbackslash{}\&"), ("{\\}", r"\{\textbackslash{}\}"),
        ("st-gumbel, 2.5 < x", "st-gumbel, 2.5 < x"),
    ],
)
def test_escape_makes_each_special_character_literal(text, expected):
    assert latex_escape(text) == expected


def test_escaped_text_has_no_active_special_character_left():
    text = "".join(np.random.default_rng(0).choice(list("ab _%&#${}~^\\"), 500))
    escaped = latex_escape(text)
    # Remove the escapes this module writes; nothing special may remain.
    rest = re.sub(r"\\(textbackslash|textasciitilde|textasciicircum)\{\}|\\[_%&#${}]", "", escaped)
    assert rest == text.translate({ord(c): None for c in "_%&#${}~^\\"})


def test_inline_code_spans_become_texttt_and_lone_backticks_stay_text():
    assert latex_inline("`st_gumbel` at 5%") == r"\texttt{st\_gumbel} at 5\%"
    assert latex_inline("a ` b_c") == r"a ` b\_c"


def test_table_layout_numbers_and_escaping():
    frame = pd.DataFrame({
        "estimator": ["st_gumbel", "a&b"],
        "mean_variance": [1234567.0, float("nan")],
        "draws": [2000, 10],
        "p%": [1.5e-7, 0.25],
        "claims_unbiased": [True, False],
    })
    table = latex_table(frame, caption="Variance of `st` & co", label="tab:var_1", digits=2)
    lines = table.splitlines()
    assert lines[:6] == [
        r"\begin{table}[htbp]", r"\centering", r"\caption{Variance of \texttt{st} \& co}",
        r"\label{tab:var_1}", r"\begin{tabular}{lrrrr}", r"\toprule",
    ]
    assert lines[6] == r"estimator & mean\_variance & draws & p\% & claims\_unbiased \\"
    assert lines[7] == r"\midrule"
    # the numbers exactly as the Markdown tables write them
    assert lines[8] == " & ".join([
        r"st\_gumbel", format_number(1234567.0, 2), format_number(2000, 2),
        format_number(1.5e-7, 2), "True",
    ]) + r" \\"
    assert lines[8] == r"st\_gumbel & 1.2e+06 & 2,000 & 1.5e-07 & True \\"
    assert lines[9] == r"a\&b & – & 10 & 0.25 & False \\"
    assert lines[10:] == [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    assert table.endswith("\n")


def test_table_column_format_override_and_bad_label():
    frame = pd.DataFrame({"a": [1.0]})
    assert r"\begin{tabular}{S[table-format=1.1]}" in latex_table(
        frame, caption="c", label="t", column_format="S[table-format=1.1]"
    )
    with pytest.raises(ValueError, match="LaTeX label 'tab:a b}'"):
        latex_table(frame, caption="c", label="tab:a b}")
