"""The report builder: structure, the files it writes, self-contained HTML, determinism."""

import base64
import json
import re

import pandas as pd
import pytest
from matplotlib.figure import Figure

from estimator_lab.reporting import Report, latex_table, markdown_table

MANIFEST = {
    "created": "2024-01-01T00:00:00+00:00", "seed": 3, "device": "cpu", "wall_time_s": 1.25,
    "git_revision": None, "versions": {"torch": "2.4.0", "pandas": "2.2"}, "study": "demo",
    "config": {"estimators": ("reinforce", "st"), "network": {"num_gates": 12}},
}
VARIANCE = pd.DataFrame({"estimator": ["reinforce", "st"], "variance": [0.25, 1.5e-6]},
                        index=[7, 9])
SUMMARY = pd.DataFrame({"estimator": ["st_gumbel"], "draws": [2000], "p%": [0.5]})


def figure(scale: float = 1.0) -> Figure:
    ax = Figure(figsize=(3, 2)).subplots()
    ax.plot([0, 1, 2], [0, scale, 4 * scale], marker="o")
    ax.set_title("variance")
    return ax.figure


def make_report() -> Report:
    return (
        Report("Demo of `st`", MANIFEST)
        .add_text("**Question.** How noisy is `st`?")
        .add_section("Variance", "Per estimator:")
        .add_table(VARIANCE, "Variance of one draw")
        .add_figure(figure(), "Variance per `estimator`", name="variance")
        .add_table(SUMMARY, "Summary & flags", label="tab:summary", digits=2)
        .add_figure(figure(2.0), "Second", name="second_fig")
    )


def test_markdown_order_numbering_links_and_closing_manifest():
    text = make_report().markdown()
    assert text.split("\n\n") == [
        "# Demo of `st`",
        "**Question.** How noisy is `st`?",
        "## Variance",
        "Per estimator:",
        "**Table 1.** Variance of one draw",
        markdown_table(VARIANCE.reset_index(drop=True)),
        "![Figure 1](variance.png)",
        "**Figure 1.** Variance per `estimator` ([PDF](variance.pdf))",
        "**Table 2.** Summary & flags",
        markdown_table(SUMMARY, 2),
        "![Figure 2](second_fig.png)",
        "**Figure 2.** Second ([PDF](second_fig.pdf))",
        "## Manifest",
        "How these results were made (also in `manifest.json`).",
        "\n".join([
            "| entry | value |", "|:---|:---|", "| created | 2024-01-01T00:00:00+00:00 |",
            "| seed | 3 |", "| device | cpu |", "| wall_time_s | 1.25 |", "| git_revision | null |",
            "| versions.torch | 2.4.0 |", "| versions.pandas | 2.2 |", "| study | demo |",
            '| config.estimators | ["reinforce", "st"] |', "| config.network.num_gates | 12 |",
        ]) + "\n",
    ]


def test_write_produces_every_file(tmp_path):
    report = make_report()
    assert report.write(tmp_path / "out") == tmp_path / "out" / "report.md"
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "report.md", "report.html", "tables.tex", "manifest.json", "variance.png",
        "variance.pdf", "second_fig.png", "second_fig.pdf",
    }
    assert (tmp_path / "out" / "report.md").read_text() == report.markdown()
    assert (tmp_path / "out" / "variance.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / "out" / "variance.pdf").read_bytes().startswith(b"%PDF-")
    # the manifest as the studies write it, tuples as lists
    assert (tmp_path / "out" / "manifest.json").read_text() == json.dumps(
        MANIFEST, indent=2, default=str) + "\n"
    tex = (tmp_path / "out" / "tables.tex").read_text()
    assert latex_table(VARIANCE.reset_index(drop=True), caption="Variance of one draw",
                       label="tab:variance-of-one-draw") in tex
    assert latex_table(SUMMARY, caption="Summary & flags", label="tab:summary", digits=2) in tex
    assert tex.count(r"\begin{table}") == 2


def test_html_is_self_contained_and_embeds_every_figure(tmp_path):
    make_report().write(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<link" not in page and "<script" not in page and 'src="http' not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2
    for source, name in zip(sources, ["variance", "second_fig"], strict=True):
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        assert base64.b64decode(source[len(prefix):]) == (tmp_path / f"{name}.png").read_bytes()
    assert "<h1>Demo of <code>st</code></h1>" in page and "<title>Demo of st</title>" in page
    assert "<caption><strong>Table 2.</strong> Summary &amp; flags</caption>" in page
    assert "<figcaption><strong>Figure 1.</strong> Variance per <code>estimator</code>" in page
    assert page.index("<h2>Manifest</h2>") > page.index("Figure 2.")
    assert '<td class="text">config.network.num_gates</td><td class="text">12</td>' in page


def test_writes_are_byte_identical(tmp_path):
    make_report().write(tmp_path / "a")
    report = make_report()  # the same content, fresh figures
    report.write(tmp_path / "b")
    report.write(tmp_path / "c")  # the same object again
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name
        assert path.read_bytes() == (tmp_path / "c" / path.name).read_bytes(), path.name
    # no timestamp or version stamp in the figure files
    assert b"Software" not in (tmp_path / "a" / "variance.png").read_bytes()
    assert b"/CreationDate" not in (tmp_path / "a" / "variance.pdf").read_bytes()


def test_different_figures_give_different_files(tmp_path):
    """Negative control of the determinism test: a changed figure changes the bytes."""
    Report("t", {}).add_figure(figure(1.0), "c", name="f").write(tmp_path / "a")
    Report("t", {}).add_figure(figure(1.5), "c", name="f").write(tmp_path / "b")
    for name in ("f.png", "f.pdf", "report.html"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "message"),
    [("report", "must be letters"), ("../x", "must be letters"), ("a b", "must be letters"),
     ("variance", "already used")],
)
def test_bad_figure_names(name, message):
    report = Report("t", {}).add_figure(figure(), "c", name="variance")
    with pytest.raises(ValueError, match=message):
        report.add_figure(figure(), "c", name=name)


def test_duplicate_table_label():
    report = Report("t", {}).add_table(VARIANCE, "Variance")
    with pytest.raises(ValueError, match="table label 'tab:variance' is already used"):
        report.add_table(SUMMARY, "variance!")


def test_interval_columns_and_noise_note():
    from estimator_lab.reporting.markdown import format_interval, interval_columns, noise_note

    rows = pd.DataFrame({
        "estimator": ["reinforce", "st", "rloo"], "parameter": ["w", "w", "w"],
        "relative_bias": [7.58, 3.01, 0.0], "relative_bias_low": [0.0, 2.9, 0.0],
        "relative_bias_high": [12.1, 3.12, 0.5], "snr": [0.0, 52.9, 1.0],
        "snr_low": [0.0, 52.0, float("nan")], "snr_high": [0.1, 53.8, float("nan")],
    })
    written = interval_columns(rows, ["relative_bias", "snr"])
    assert list(written.columns) == ["estimator", "parameter", "relative_bias", "snr"]
    assert list(written["relative_bias"]) == ["7.58 [0, 12.1]", "3.01 [2.9, 3.12]", "0 [0, 0.5]"]
    assert list(written["snr"]) == ["0 [0, 0.1]", "52.9 [52, 53.8]", "1"]
    assert format_interval(2e-7, 1e-7, 3e-7) == "2.00e-07 [1.00e-07, 3.00e-07]"
    # Only a positive figure whose interval reaches 0 is called noise (rloo's 0 is not quoted).
    assert noise_note(rows, "relative_bias") == (
        "`relative_bias` is Monte Carlo noise at these draws (its 95% interval reaches 0) for "
        "`reinforce` `w` (7.58 [0, 12.1]).")
    assert noise_note(rows, "snr") == ""
    with pytest.raises(ValueError, match="'snr_low'"):
        interval_columns(rows.drop(columns="snr_low"), ["snr"])
