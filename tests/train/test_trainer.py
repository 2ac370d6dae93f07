"""The epoch trainer: resumes exactly, refuses incompatible folders, writes complete run folders."""

import json
import math
import os
import shlex
from dataclasses import replace

import pandas as pd
import pytest
import torch

from estimator_lab.cli import main
from estimator_lab.estimators.baselines import RatioState
from estimator_lab.train.command import parse_overrides
from estimator_lab.train.gaters import PAPER_GATERS
from estimator_lab.train.trainer import (
    LOG_COLUMNS,
    OVERRIDABLE,
    TrainConfig,
    build_network,
    build_optimiser,
    incoming_weights,
    load_run,
    train_gater,
)

TINY = {"train_size": 64, "eval_size": 64, "batch_size": 32}


class ShellCommand:
    """Pickles as a call of `os.system(command)`: loading it with plain pickle runs it."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def plant_pickle(path, marker):
    """Writes a `.pt` file at `path` whose loading (unsafely) would create `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": ShellCommand(f"touch {shlex.quote(str(marker))}")}, path)


def test_sbn_gater_learns_at_its_own_rate():
    config = TrainConfig("sbn")
    optimiser = build_optimiser(build_network(config), PAPER_GATERS["sbn"])
    assert [group["lr"] for group in optimiser.param_groups] == [0.001, 0.1]
    assert [len(group["params"]) for group in optimiser.param_groups] == [4, 4]


def test_bad_settings_fail_before_any_work():
    with pytest.raises(KeyError, match="unknown gater"):
        TrainConfig("relu")
    with pytest.raises(ValueError, match="subset"):
        TrainConfig("sts", train_size=8)
    with pytest.raises(ValueError, match="cannot override"):
        TrainConfig("sts", overrides={"num_gates": 3.0})
    with pytest.raises(ValueError, match="invalid gater settings"):
        TrainConfig("sts", overrides={"kl_weight": -1.0})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", OVERRIDABLE)
def test_non_finite_settings_are_refused(name, value):
    with pytest.raises(ValueError, match="gater settings"):
        TrainConfig("sbn", overrides={name: value})


@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.5])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        TrainConfig("sbn", seed=seed)


@pytest.mark.parametrize("argument", [["--seed", "-1"], ["--seed", str(2**64)],
                                      ["--set", "kl_weight=nan"], ["--set", "l1_rate=inf"]])
def test_a_run_that_fails_to_start_writes_nothing(tmp_path, capsys, argument):
    out = tmp_path / "run"
    assert main(["train", "sbn", "--epochs", "1", "--train-size", "64", "--eval-size", "64",
                 "--device", "cpu", "--quiet", "--out", str(out), *argument]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and ("seed" in error or "finite" in error), error
    assert not out.exists()


def test_a_planted_pickle_in_a_run_folder_is_refused_and_not_run(tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "executed"
    plant_pickle(out / "last.pt", marker)
    assert main(["train", "sbn", "--epochs", "1", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "posix.system" in error and "not loaded" in error
    with pytest.raises(ValueError, match="nothing in it was run"):
        train_gater(TrainConfig("sbn", max_epochs=1), out, progress=False)
    with pytest.raises(ValueError, match="nothing in it was run"):
        load_run(out)
    assert not marker.exists()
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a zip", None])
def test_a_corrupt_or_foreign_last_pt_is_refused_in_one_line(tmp_path, content):
    out = tmp_path / "run"
    out.mkdir()
    if content is None:
        torch.save({"net": {}}, out / "last.pt")  # loadable, but not a run's state
    else:
        (out / "last.pt").write_bytes(content)
    with pytest.raises(ValueError, match="last.pt") as error:
        load_run(out)
    assert "\n" not in str(error.value)


def test_overrides_replace_only_the_named_settings():
    config = TrainConfig("straight-through", overrides={"kl_weight": 0.01})
    assert config.gater_config.kl_weight == 0.01
    listed = PAPER_GATERS["straight-through"]
    assert replace(config.gater_config, kl_weight=listed.kl_weight) == listed
    assert parse_overrides(["kl_weight=0.01", "gater_lr = 1e-2"]) == {
        "kl_weight": 0.01, "gater_lr": 0.01}
    for malformed in (["kl_weight"], ["kl_weight=abc"]):
        with pytest.raises(ValueError, match="FIELD=NUMBER"):
            parse_overrides(malformed)
    assert parse_overrides(["max_norm=None", "init_norm=2"]) == {"max_norm": None,
                                                                   "init_norm": 2.0}
    assert TrainConfig("sbn", overrides={"init_norm": None}).gater_config.init_norm is None
    with pytest.raises(ValueError, match="cannot be none"):
        TrainConfig("sbn", overrides={"kl_weight": None})


def test_init_norm_rescales_every_units_incoming_weights_and_keeps_their_directions():
    default = build_network(TrainConfig("sts"))
    scaled = build_network(TrainConfig("sts", overrides={"init_norm": 2.0}))
    for plain, rescaled in zip(incoming_weights(default), incoming_weights(scaled), strict=True):
        norms = rescaled.norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, 2.0))
        torch.testing.assert_close(rescaled / 2.0, plain / plain.norm(dim=1, keepdim=True))
        # default: uniform in +-1/sqrt(n) over n inputs, squared row norm 1/3 on average (the
        # mean over the rows has a standard deviation below 0.003 for every matrix here)
        assert abs(plain.norm(dim=1).square().mean().item() - 1 / 3) < 0.015
    assert all(torch.equal(default.state_dict()[k], scaled.state_dict()[k])
               for k in default.state_dict() if k.endswith("bias"))
    with pytest.raises(ValueError, match="invalid gater settings"):
        TrainConfig("sts", overrides={"init_norm": 0.0})


@pytest.mark.network
@pytest.mark.parametrize("gater", ["sbn", "sts", "noisy-rectifier"])
def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(mnist_env, tmp_path, gater):
    straight = train_gater(TrainConfig(gater, max_epochs=2, **TINY), tmp_path / "a",
                           progress=False)
    train_gater(TrainConfig(gater, max_epochs=1, **TINY), tmp_path / "b", progress=False)
    resumed = train_gater(TrainConfig(gater, max_epochs=2, **TINY), tmp_path / "b",
                          progress=False)
    a, b = (torch.load(tmp_path / name / "final.pt") for name in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    columns = [c for c in LOG_COLUMNS if c != "epoch_seconds"]
    pd.testing.assert_frame_equal(straight.log[columns], resumed.log[columns])
    assert list(straight.log["epoch"]) == [0, 1, 2]
    assert {p.name for p in (tmp_path / "a").iterdir()} == {
        "config.json", "log.csv", "last.pt", "best.pt", "final.pt", "epoch-000.pt", "epoch-001.pt"
    }
    assert load_run(tmp_path / "a").valid_error == straight.valid_error


@pytest.mark.network
def test_a_run_folder_of_the_earlier_format_resumes_exactly(mnist_env, tmp_path):
    """`last.pt` files written before the plain format hold the SBN state as a `RatioState`."""
    train_gater(TrainConfig("sbn", max_epochs=2, **TINY), tmp_path / "a", progress=False)
    train_gater(TrainConfig("sbn", max_epochs=1, **TINY), tmp_path / "b", progress=False)
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert set(state["estimator_state"]) == {"numerator", "denominator"}  # plain tensors
    state["estimator_state"] = RatioState(**state["estimator_state"])
    torch.save(state, tmp_path / "b" / "last.pt")  # as the earlier format saved it
    train_gater(TrainConfig("sbn", max_epochs=2, **TINY), tmp_path / "b", progress=False)
    a, b = (torch.load(tmp_path / name / "final.pt", weights_only=True) for name in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    resaved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)  # converted
    assert set(resaved["estimator_state"]) == {"numerator", "denominator"}


@pytest.mark.network
def test_a_folder_with_other_settings_is_refused(mnist_env, tmp_path, monkeypatch):
    train_gater(TrainConfig("sts", max_epochs=1, **TINY), tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train_gater(TrainConfig("sts", max_epochs=1, seed=1, **TINY), tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train_gater(TrainConfig("sts", max_epochs=2, overrides={"kl_weight": 0.01}, **TINY),
                    tmp_path, progress=False)
    # the listed configuration itself changed since the run was made (settings are stored)
    monkeypatch.setitem(PAPER_GATERS, "sts", replace(PAPER_GATERS["sts"], momentum=0.9))
    with pytest.raises(ValueError, match="other settings"):
        train_gater(TrainConfig("sts", max_epochs=2, **TINY), tmp_path, progress=False)


@pytest.mark.network
def test_a_run_saved_before_a_setting_existed_resumes_only_at_its_default(mnist_env, tmp_path):
    train_gater(TrainConfig("sts", max_epochs=1, **TINY), tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    del state["gater_settings"]["init_norm"]  # as saved before `init_norm` was added
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="other settings"):
        train_gater(TrainConfig("sts", max_epochs=2, overrides={"init_norm": 2.0}, **TINY),
                    tmp_path, progress=False)
    assert train_gater(TrainConfig("sts", max_epochs=2, **TINY), tmp_path,
                       progress=False).log["epoch"].tolist() == [0, 1, 2]


@pytest.mark.network
def test_train_command_writes_a_run_folder(mnist_env, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "baseline-sigmoid", "--epochs", "1", "--train-size", "64",
                 "--eval-size", "64", "--quiet", "--out", str(out)]) == 0
    assert "best epoch" in capsys.readouterr().out
    log = pd.read_csv(out / "log.csv")
    assert list(log.columns) == list(LOG_COLUMNS) and len(log) == 2

    def no_constants(name):
        raise AssertionError(f"config.json holds the non-standard {name}")

    saved = json.loads((out / "config.json").read_text(), parse_constant=no_constants)
    assert saved["gater"] == "baseline-sigmoid" and saved["max_epochs"] == 1
    assert main(["train", "relu", "--out", str(out)]) == 2
    assert "unknown gater" in capsys.readouterr().err
