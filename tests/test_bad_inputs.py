"""The bad-input battery: every subcommand, fed what a careless or malicious user might type.

Each case must end in exactly one line on stderr, `estimator-lab: error: ...`, saying what is
wrong (the expected fragment below), with exit status 2 and nothing written: no `--out` folder,
no staging folder, nothing new beside the files the case itself planted. The CLI runs in-process
(`estimator_lab.cli.main`), so the whole battery takes seconds; no case reaches a long run.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from estimator_lab.cli import main

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


BIAS = ["bias", "--graph", "toy:n=3", "--draws", "20", "--quiet"]
VARIANCE = ["variance", "--graph", "toy:n=3", "--draws", "200", "--quiet"]
DEMO = ["demo", "--draws", "4", "--quiet"]
TRAIN = ["train", "sbn", "--epochs", "1", "--train-size", "32", "--eval-size", "32", "--quiet"]
RUN = ["run", "bias_small_graphs", "--quick", "--quiet"]
VALIDATE = ["validate", "disarm", "--quiet", "--graphs", "toy:n=2"]

CASES = [
    # --- demo ---------------------------------------------------------------------------
    ("demo-seed-negative", [*DEMO, "--seed", "-1"], "argument --seed: expected an integer from 0"),
    ("demo-seed-huge", [*DEMO, "--seed", "99999999999999999999999"], "from 0 to 4,294,967,295"),
    ("demo-draws-abc", [*DEMO, "--draws", "abc"],
     "argument --draws: expected an integer, got 'abc'"),
    ("demo-draws-one", [*DEMO, "--draws", "1"], "expected an integer from 2 to 1,000,000,000"),
    ("demo-draws-huge", [*DEMO, "--draws", "99999999999999999999"], "from 2 to 1,000,000,000"),
    ("demo-draws-float", [*DEMO, "--draws", "1e3"], "expected an integer, got '1e3'"),
    ("demo-estimator-unknown", [*DEMO, "--estimators", "reinforse"],
     "unknown estimator 'reinforse'"),
    ("demo-estimator-empty", [*DEMO, "--estimators", ""], "unknown estimator ''"),
    ("demo-device-bogus", [*DEMO, "--device", "bogus"], "unknown device 'bogus'"),
    pytest.param("demo-device-cuda", [*DEMO, "--device", "cuda"], "CUDA is not available",
                 marks=NO_CUDA),
    ("demo-batch-zero", [*DEMO, "--batch-size", "0"],
     "argument --batch-size: expected an integer >= 1"),
    ("demo-chunk-zero", [*DEMO, "--chunk-size", "0"],
     "argument --chunk-size: expected an integer >= 1"),
    ("demo-data-missing", [*DEMO, "--data", "{tmp}/no-such.npz"], "no-such.npz"),
    ("demo-unknown-option", [*DEMO, "--drawz", "4"], "unrecognized arguments: --drawz 4"),
    # --- bias ---------------------------------------------------------------------------
    ("bias-graph-unknown", ["bias", "--graph", "nope:1"], "unknown graph 'nope'"),
    ("bias-toy-negative-n", ["bias", "--graph", "toy:n=-3"], "n must be >= 1, got -3"),
    ("bias-toy-batch-zero", ["bias", "--graph", "toy:n=3,batch=0"], "batch must be >= 1, got 0"),
    ("bias-toy-t-nan", ["bias", "--graph", "toy:n=3,t=nan"], "t must be finite, got nan"),
    ("bias-toy-logits-inf", ["bias", "--graph", "toy:logits=inf/1"], "must be finite"),
    ("bias-toy-huge-n", ["bias", "--graph", "toy:n=100000"], "exceed the enumeration limit"),
    ("bias-toy-n-not-int", ["bias", "--graph", "toy:n=3.5"], "n must be int"),
    ("bias-toy-unknown-key", ["bias", "--graph", "toy:n=3,q=1"], "unknown q"),
    ("bias-toy-malformed", ["bias", "--graph", "toy:n=3,,="], "malformed graph spec"),
    ("bias-sbn-no-sizes", ["bias", "--graph", "sbn"], "give layer sizes like sbn:4-4"),
    ("bias-sbn-zero-layer", ["bias", "--graph", "sbn:4-0"], "layer sizes must be >= 1"),
    ("bias-sbn-batch-zero", ["bias", "--graph", "sbn:2-2,batch=0"], "batch must be >= 1, got 0"),
    ("bias-sbn-scale-nan", ["bias", "--graph", "sbn:2-2,scale=nan"], "scale must be finite"),
    ("bias-sbn-too-many-gates", ["bias", "--graph", "sbn:20-20"], "exceed the enumeration limit"),
    ("bias-tiny-batch-zero", ["bias", "--graph", "tiny-conditional:gates=4,batch=0"],
     "batch must be >= 1, got 0"),
    ("bias-tiny-too-many-gates", ["bias", "--graph", "tiny-conditional:gates=17"],
     "tiny-conditional takes 1 to 16 gates, got 17"),
    ("bias-estimator-unknown", [*BIAS, "--estimators", "reinforse"],
     "unknown estimator 'reinforse'"),
    ("bias-single-layer-estimator", ["bias", "--graph", "sbn:2-2", "--estimators",
                                     "local-expectation"], "supports one gate layer"),
    ("bias-seed-negative", [*BIAS, "--seed", "-1"], "argument --seed: expected an integer from 0"),
    ("bias-seed-huge", [*BIAS, "--seed", "99999999999999999999999"], "argument --seed"),
    ("bias-device-bogus", [*BIAS, "--device", "bogus"], "unknown device 'bogus'"),
    pytest.param("bias-device-cuda", [*BIAS, "--device", "cuda"], "CUDA is not available",
                 marks=NO_CUDA),
    ("bias-draws-zero", [*BIAS, "--draws", "0"], "argument --draws: expected an integer from 2"),
    ("bias-draws-negative", [*BIAS, "--draws", "-5"],
     "argument --draws: expected an integer from 2"),
    ("bias-alpha-zero", [*BIAS, "--alpha", "0"], "argument --alpha: expected a number in (0, 1)"),
    ("bias-alpha-one", [*BIAS, "--alpha", "1"], "argument --alpha: expected a number in (0, 1)"),
    ("bias-alpha-nan", [*BIAS, "--alpha", "nan"], "argument --alpha: expected a number in (0, 1)"),
    ("bias-alpha-text", [*BIAS, "--alpha", "often"], "argument --alpha: expected a number"),
    ("bias-no-graph", ["bias", "--draws", "20"], "the following arguments are required: --graph"),
    ("bias-no-out", ["bias", "--graph", "toy:n=3", "--no-out"], "required: --out"),
    # --- variance -----------------------------------------------------------------------
    ("variance-seed-negative", [*VARIANCE, "--seed", "-1"], "argument --seed"),
    ("variance-device-bogus", [*VARIANCE, "--device", "bogus"], "unknown device 'bogus'"),
    pytest.param("variance-device-cuda", [*VARIANCE, "--device", "cuda"], "CUDA is not available",
                 marks=NO_CUDA),
    ("variance-toy-negative-n", ["variance", "--graph", "toy:n=-3"], "n must be >= 1, got -3"),
    ("variance-chunk-zero", [*VARIANCE, "--chunk-size", "0"], "argument --chunk-size"),
    ("variance-group-zero", [*VARIANCE, "--group-size", "0"], "argument --group-size"),
    ("variance-alpha-two", [*VARIANCE, "--alpha", "2"], "argument --alpha"),
    ("variance-nan-policy", [*VARIANCE, "--nan-policy", "ignore"], "invalid choice: 'ignore'"),
    ("variance-estimator-unknown", [*VARIANCE, "--estimators", "st,nope"],
     "unknown estimator 'nope'"),
    ("variance-parameters-missing",
     ["variance", "--draws", "200", "--parameters", "{tmp}/no-such.pt"],
     "no-such.pt: no such file"),
    ("variance-parameters-corrupt",
     ["variance", "--draws", "200", "--parameters", "{tmp}/corrupt.pt"],
     "corrupt.pt is not a readable torch.save file"),
    ("variance-parameters-mismatched",
     ["variance", "--draws", "200", "--parameters", "{tmp}/mismatched.pt"],
     "mismatched.pt does not fit the paper network"),
    ("variance-checkpoint-corrupt", [*VARIANCE, "--checkpoint", "{tmp}/corrupt.pt"],
     "corrupt.pt is not a readable torch.save file"),
    ("variance-data-missing", ["variance", "--draws", "200", "--data", "{tmp}/no-such.npz"],
     "no-such.npz"),
    # --- estimators, report, data, top level --------------------------------------------
    ("estimators-extra-argument", ["estimators", "--all"], "unrecognized arguments: --all"),
    ("report-no-folder", ["report", "{tmp}/no-such-folder"], "no-such-folder"),
    ("report-no-manifest", ["report", "{tmp}/empty"], "has no manifest.json"),
    ("report-unknown-study", ["report", "{tmp}/unknown-study"], "unknown study 'nope'"),
    ("report-a-file", ["report", "{tmp}/corrupt.pt"], "corrupt.pt"),
    ("report-draws-not-a-number", ["report", "{tmp}/tampered"], "draws must be int, got 'abc'"),
    ("report-no-argument", ["report"], "the following arguments are required: DIR"),
    ("data-no-action", ["data"], "the following arguments are required: ACTION"),
    ("data-unknown-action", ["data", "load"], "invalid choice: 'load'"),
    ("data-info-corrupt-cache", ["data", "info", "--cache-dir", "{tmp}/bad-cache"],
     "is not valid"),
    ("data-info-no-cache", ["data", "info", "--cache-dir", "{tmp}/empty"], "no MNIST cache at"),
    ("no-command", [], "the following arguments are required: COMMAND"),
    ("unknown-command", ["bais"], "invalid choice: 'bais'"),
    # --- train, run, validate -------------------------------------------------------------
    ("train-unknown-config", ["train", "nope", "--epochs", "1"], "nope"),
    ("train-seed-negative", [*TRAIN, "--seed", "-1"], "argument --seed"),
    ("train-epochs-zero", [*TRAIN, "--epochs", "0"], "argument --epochs"),
    ("train-set-malformed", [*TRAIN, "--set", "kl_weight"], "--set expects FIELD=NUMBER"),
    ("train-set-unknown-field", [*TRAIN, "--set", "nope=1"], "nope"),
    ("train-device-bogus", [*TRAIN, "--device", "bogus"], "unknown device 'bogus'"),
    ("train-data-missing", [*TRAIN, "--data", "{tmp}/no-such.npz"], "no-such.npz"),
    ("run-unknown-study", ["run", "nope"], "unknown study 'nope'"),
    ("run-seed-negative", [*RUN, "--seed", "-1"], "argument --seed"),
    ("validate-unknown-target", ["validate", "nope", "--quiet"], "nope"),
    ("validate-graph-too-large", ["validate", "disarm", "--graphs", "toy:n=40"],
     "exceed the enumeration limit"),
    ("validate-graph-negative-n", ["validate", "disarm", "--graphs", "toy:n=-3"],
     "n must be >= 1, got -3"),
    ("validate-budget-unknown", [*VALIDATE, "--budget", "huge"], "invalid choice: 'huge'"),
    ("validate-device-bogus", [*VALIDATE, "--device", "bogus"], "unknown device 'bogus'"),
    ("validate-seed-negative", [*VALIDATE, "--seed", "-1"], "argument --seed"),
]
"""`(id, argv, fragment of the error line)`; `{tmp}` is the test's folder, `--out` is added
to the commands that take one."""

TAKES_OUT = {"demo", "bias", "variance", "train", "run", "validate"}


def _plant(folder) -> None:
    """The files some cases point at: a corrupt torch file, a state dict of another network,
    an empty folder, report folders with an unknown study or a tampered configuration, and a
    corrupt MNIST cache."""
    (folder / "corrupt.pt").write_bytes(b"\x80\x04 not a torch file")
    torch.save({"weight": torch.zeros(2, 2)}, folder / "mismatched.pt")
    (folder / "empty").mkdir()
    (folder / "unknown-study").mkdir()
    (folder / "unknown-study" / "manifest.json").write_text(json.dumps(
        {"study": "nope", "config": {}}))
    (folder / "tampered").mkdir()
    (folder / "tampered" / "manifest.json").write_text(json.dumps(
        {"study": "bias", "config": {"graph": "toy:n=3", "draws": "abc"}}))
    for name in ("results.csv", "summary.csv"):
        (folder / "tampered" / name).write_text("estimator\nreinforce\n")
    (folder / "bad-cache").mkdir()
    from estimator_lab.data import mnist_info

    cache_file = mnist_info(folder / "bad-cache")["path"]
    with open(cache_file, "wb") as file:
        file.write(b"PK\x03\x04 truncated")


def _snapshot(folder) -> set[str]:
    return {os.path.relpath(os.path.join(root, name), folder)
            for root, dirs, files in os.walk(folder) for name in dirs + files}


@pytest.mark.parametrize(("case", "argv", "fragment"), CASES, ids=[
    c.values[0] if hasattr(c, "values") else c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, argv, fragment, tmp_path,
                                                          capsys):
    _plant(tmp_path)
    before = _snapshot(tmp_path)
    argv = [word.replace("{tmp}", str(tmp_path)) for word in argv]
    if "--no-out" in argv:
        argv.remove("--no-out")
    elif argv and argv[0] in TAKES_OUT:
        argv += ["--out", str(tmp_path / "out")]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("estimator-lab: error: ") and err.count("\n") == 1, err
    assert fragment in err, err
    assert _snapshot(tmp_path) == before  # no --out folder, no staging folder, nothing else
