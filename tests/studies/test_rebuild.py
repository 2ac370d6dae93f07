"""Rebuilding a report from its folder: byte-identical to the original, nothing rerun, and
one-line errors for folders that cannot be rebuilt."""

import json
import shutil
from dataclasses import asdict

import pytest

from estimator_lab.graphs import ConditionalConfig
from estimator_lab.studies import bias as bias_study
from estimator_lab.studies.bias import BiasConfig, run_bias
from estimator_lab.studies.demo import DemoConfig, run_demo
from estimator_lab.studies.rebuild import ReportError, config_from_dict, rebuild_report


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
