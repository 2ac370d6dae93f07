"""Rebuilding a report from its folder: byte-identical to the original, nothing rerun, and
one-line errors for folders that cannot be rebuilt."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from estimator_lab.graphs import ConditionalConfig
from estimator_lab.studies import bias as bias_study
from estimator_lab.studies.bias import BiasConfig, run_bias
from estimator_lab.studies.demo import DemoConfig, run_demo
from estimator_lab.studies.rebuild import STUDIES, ReportError, config_from_dict, rebuild_report
from estimator_lab.studies.variance import VarianceConfig, run_variance

REPORTS = Path(__file__).parents[2] / "reports"


@pytest.fixture(scope="module")
def bias_run(tmp_path_factory):
    """A tiny bias study, run once; tests work on copies (`bias_folder`)."""
    out = tmp_path_factory.mktemp("bias") / "run"
    run_bias(BiasConfig(graph="toy:n=3", draws=50, seed=1, device="cpu"), out)
    return out


@pytest.fixture
def bias_folder(bias_run, tmp_path):
    return shutil.copytree(bias_run, tmp_path / "run")


def test_bias_report_is_rebuilt_byte_identically_without_rerunning(
        bias_folder, monkeypatch, assert_rebuilt_identically):
    def fail(*args, **kwargs):
        raise AssertionError("the study was rerun")

    for name in ("run_draws", "exact_gradient", "exact_moments", "build_problem"):
        monkeypatch.setattr(bias_study, name, fail)
    assert_rebuilt_identically(bias_folder)


def test_rebuilt_report_follows_the_saved_results(bias_folder):
    """Negative control: the report is built from the files, so an edited table shows."""
    original_html = (bias_folder / "report.html").read_text()
    summary = (bias_folder / "summary.csv").read_text()
    (bias_folder / "summary.csv").write_text(summary.replace("not flagged", "edited verdict"))
    original = (bias_folder / "report.md").read_text()
    rebuilt = rebuild_report(bias_folder).read_text()
    assert rebuilt != original and "edited verdict" in rebuilt
    html = (bias_folder / "report.html").read_text()
    assert html != original_html and "edited verdict" in html


@pytest.mark.network
def test_demo_report_is_rebuilt_byte_identically(mnist_env, tmp_path,
                                                 assert_rebuilt_identically):
    network = ConditionalConfig(num_gater_hidden=8, num_gates=16)  # not the default: rebuilt
    config = DemoConfig(draws=4, chunk_size=4, batch_size=4, device="cpu", network=network)
    run_demo(config, tmp_path / "demo")
    assert_rebuilt_identically(tmp_path / "demo")


def test_config_from_dict_inverts_asdict_through_json():
    config = DemoConfig(draws=7, estimators=("st", "arm"), data_path=None,
                        network=ConditionalConfig(num_inputs=6, num_gater_hidden=4, num_gates=5,
                                                  num_classes=3))
    assert config_from_dict(DemoConfig, json.loads(json.dumps(asdict(config)))) == config
    assert config_from_dict(BiasConfig, {"graph": "toy:n=3"}) == BiasConfig(graph="toy:n=3")


def edit_manifest(folder, change):
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def edit_config(**entries):
    return lambda f: edit_manifest(f, lambda m: m["config"].update(entries))


def cut(name, *, size=None, lines=None):
    """Cuts a saved table to its first `size` bytes or its first `lines` lines."""
    def damage(folder):
        data = (folder / name).read_bytes()
        if lines is not None:
            data = b"".join(data.splitlines(keepends=True)[:lines])
        (folder / name).write_bytes(data[:size])
    return damage


def edit_cell(name, line, column, value):
    """Sets one field of line `line` (1 is the header) of a saved table, as text."""
    def damage(folder):
        rows = (folder / name).read_text().splitlines(keepends=True)
        header = rows[0].rstrip("\n").split(",")
        fields = rows[line - 1].rstrip("\n").split(",")
        fields[header.index(column) + len(fields) - len(header)] = value  # quoted graph spec
        rows[line - 1] = ",".join(fields) + "\n"
        (folder / name).write_text("".join(rows))
    return damage


def drop_field(name, line):
    def damage(folder):
        rows = (folder / name).read_text().splitlines(keepends=True)
        rows[line - 1] = rows[line - 1].rstrip("\n").rsplit(",", 1)[0] + "\n"
        (folder / name).write_text("".join(rows))
    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: shutil.rmtree(f), "is not a folder"),
        (lambda f: (f / "manifest.json").unlink(), "has no manifest.json: not a study's report"),
        (lambda f: (f / "manifest.json").write_text("{oops"), "manifest.json is not valid JSON"),
        (lambda f: edit_manifest(f, lambda m: m.pop("study")), "names no study"),
        (lambda f: edit_manifest(f, lambda m: m.update(study="sweep")),
         "names an unknown study 'sweep' (known: bias, bias_small_graphs, demo, "
         "mnist_variance, optimal_baseline, paper_table, variance)"),
        (lambda f: edit_manifest(f, lambda m: m.update(study=["bias"])),
         "names an unknown study ['bias']"),
        (lambda f: edit_manifest(f, lambda m: m.pop("config")), "has no 'config' entry"),
        (lambda f: edit_manifest(f, lambda m: m.update(study="demo")),
         "lacks bias_check.csv, needed to rebuild the 'demo' report"),
        (lambda f: (f / "summary.csv").unlink(), "lacks summary.csv, needed to rebuild the 'bias'"),
        (lambda f: (f / "summary.csv").write_text(""), "summary.csv is not a readable table"),
        (lambda f: edit_manifest(f, lambda m: m["config"].update(colour="red")),
         "BiasConfig has no field(s) colour"),
        (lambda f: edit_manifest(f, lambda m: m["config"].update(draws=1)),
         "BiasConfig rejects the saved configuration: draws must be >= 2"),
        (lambda f: edit_manifest(f, lambda m: m.pop("num_gates")),
         "the saved results or manifest lack 'num_gates', which the 'bias' report needs"),
        # Regression (issue #22 defect 4): tampered data rebuilt with exit 0, or a traceback.
        (cut("results.csv", size=300), "results.csv is cut short: its last line is incomplete"),
        (cut("results.csv", lines=6), "results.csv holds rows of the estimators ['reinforce'], "
                                      "the saved configuration ['reinforce', 'st']"),
        (cut("results.csv", lines=12), "results.csv does not match the saved configuration: st "
                                       "has 5 rows, not the 6 coordinates of 'toy:n=3' in order"),
        (drop_field("results.csv", 3), "results.csv is damaged: row 3 has 11 fields, the "
                                       "header 12"),
        (edit_cell("results.csv", 4, "mean", "abc"),
         "results.csv: column 'mean' must hold numbers, row 4 holds 'abc'"),
        (edit_cell("results.csv", 4, "parameter", ""),
         "results.csv: column 'parameter' must name something in every row, row 4 holds nan"),
        (edit_cell("results.csv", 5, "parameter", "gate_logits"),
         "results.csv does not match the saved configuration: reinforce has 6 rows, not the 6 "
         "coordinates of 'toy:n=3' in order"),
        (edit_cell("summary.csv", 3, "draws", "49"),
         "summary.csv does not match the saved configuration: st has 49 draws, expected 50"),
        (edit_config(graph="toy:n=-3"),
         "manifest.json: the saved graph spec is refused: bad graph spec 'toy:n=-3': n must "
         "be >= 1"),
        (edit_config(graph="toy:n=4"), "results.csv does not match the saved configuration: "
                                       "rows of another graph than 'toy:n=4'"),
        (edit_config(estimators=["st", "reinforce"]),
         "results.csv holds rows of the estimators ['reinforce', 'st'], the saved "
         "configuration ['st', 'reinforce']"),
        (edit_config(draws="abc"),
         "BiasConfig rejects the saved configuration: draws must be int, got 'abc'"),
        (edit_config(draws=51),
         "summary.csv does not match the saved configuration: reinforce has 50 draws, "
         "expected 51"),
        (edit_config(seed=True), "seed must be int, got True"),
        (edit_config(alpha="0.01"), "alpha must be float, got '0.01'"),
        (edit_config(estimators="st"), "estimators must be tuple[str, ...], got 'st'"),
        (edit_config(estimators=["st", 3]), "estimators must be tuple[str, ...], got ['st', 3]"),
    ],
)
def test_folders_that_cannot_be_rebuilt_give_one_line(bias_folder, damage, message):
    damage(bias_folder)
    report = bias_folder / "report.md"
    before = report.read_bytes() if report.exists() else None
    with pytest.raises(ReportError, match=None) as error:
        rebuild_report(bias_folder)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)
    if before is not None:  # nothing written on failure
        assert report.read_bytes() == before


@pytest.fixture(scope="module")
def variance_run(tmp_path_factory):
    """A tiny variance study on a small graph, run once; tests work on copies."""
    out = tmp_path_factory.mktemp("variance") / "run"
    run_variance(VarianceConfig(graph="toy:n=3", estimators=("reinforce", "st"), draws=100,
                                group_size=50, seed=1, device="cpu"), out)
    return out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (cut("gates.csv", lines=4), "gates.csv holds rows of the estimators ['reinforce'], the "
                                    "saved configuration ['reinforce', 'st']"),
        (cut("gates.csv", lines=6), "gates.csv does not match the saved configuration: an "
                                    "estimator without one row per gate logit (3)"),
        (cut("summary.csv", lines=4), "summary.csv does not match the saved configuration: the "
                                      "rows of st are not the tensors gate_logits, theta"),
        (edit_cell("summary.csv", 2, "numel", "4"), "the rows of reinforce are not the tensors "
                                                    "gate_logits, theta with 3, 3 coordinates"),
        (edit_cell("ratios.csv", 2, "baseline", "st"),
         "ratios.csv does not match the saved configuration: not one ratio against reinforce"),
        (edit_cell("gates.csv", 3, "variance", "x"), "column 'variance' must hold numbers"),
        (lambda f: edit_manifest(f, lambda m: m["skipped_draws"].update(st=2)),
         "summary.csv does not match the saved configuration: st has 100 draws, expected 98"),
        (edit_config(graph="toy:n=3,t=nan/"), "manifest.json: the saved graph spec is refused"),
        (edit_config(group_size="50"), "group_size must be int, got '50'"),
    ],
)
def test_damaged_variance_folders_give_one_line(variance_run, tmp_path, damage, message):
    """Regression (issue #22 defect 4), for the variance study's three tables."""
    folder = shutil.copytree(variance_run, tmp_path / "run")
    damage(folder)
    before = (folder / "report.md").read_bytes()
    with pytest.raises(ReportError) as error:
        rebuild_report(folder)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert (folder / "report.md").read_bytes() == before


def test_a_variance_folder_rebuilds_identically(variance_run, tmp_path,
                                                assert_rebuilt_identically):
    assert_rebuilt_identically(shutil.copytree(variance_run, tmp_path / "run"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (edit_cell("results.csv", 11, "shape", "32x1999"),
         "results.csv is damaged: row 11 has 64000 coordinates, its shape 32x1999 63968"),
        (edit_cell("results.csv", 12, "numel", "313601"),
         "results.csv is damaged: row 12 has 313601 coordinates, its shape 400x784 313600"),
        (lambda f: (f / "results.csv").write_text(
            (f / "results.csv").read_text().replace("gater_out.bias", "gater_out.b", 1)),
         "results.csv does not match the saved configuration: the rows of reinforce are not "
         "the tensors gate_logits, gater_hidden.weight, gater_hidden.bias, gater_out.weight, "
         "gater_out.bias,"),
        (edit_config(batch_size=16), "results.csv does not match the saved configuration: the "
                                     "rows of reinforce are not the tensors gate_logits, "),
        (edit_cell("bias_check.csv", 3, "draws", "20"),
         "bias_check.csv does not match the saved configuration: st has 20 draws"),
        (cut("bias_check.csv", lines=2), "bias_check.csv holds rows of the estimators "
                                         "['reinforce'], the saved configuration"),
        (edit_config(network={"num_gates": "many"}),
         "ConditionalConfig rejects the saved configuration: num_gates must be int"),
    ],
)
def test_damaged_demo_folders_give_one_line(tmp_path, damage, message):
    """Regression (issue #22 defect 4), on a copy of the committed demo report."""
    folder = shutil.copytree(REPORTS / "demo", tmp_path / "demo")
    damage(folder)
    with pytest.raises(ReportError) as error:
        rebuild_report(folder)
    assert message in str(error.value) and "\n" not in str(error.value)


def _committed_reports():
    for manifest in sorted(REPORTS.glob("*/manifest.json")):
        if json.loads(manifest.read_text()).get("study") in STUDIES:
            yield manifest.parent.name


@pytest.mark.parametrize("name", list(_committed_reports()))
def test_every_committed_report_rebuilds_byte_identically(name, tmp_path):
    """`estimator-lab report` on a copy of each committed report folder it accepts rewrites
    every file byte for byte (about 10 s for all seven on a 2-core machine; in the default run
    so that a change to plotting or rendering cannot leave the committed reports stale)."""
    folder = shutil.copytree(REPORTS / name, tmp_path / name)
    rebuild_report(folder)
    for path in sorted((REPORTS / name).rglob("*")):
        if path.is_file():
            assert (folder / path.relative_to(REPORTS / name)).read_bytes() == path.read_bytes()
