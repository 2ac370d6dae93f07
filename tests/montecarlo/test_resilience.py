"""Long runs: checkpoints that survive SIGKILL, resumes that end identical, named NaNs,
worker shares that merge to the single-process result, and gloo workers."""

import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.montecarlo import run_draws
from estimator_lab.montecarlo.checkpoint import CheckpointMismatch
from estimator_lab.montecarlo.engine import NonFiniteDrawError
from estimator_lab.montecarlo.fastpath import restore_accumulator
from estimator_lab.montecarlo.plan import DrawPlan
from estimator_lab.testing import conditional_problem

problem = partial(conditional_problem, 8, 4, num_inputs=12, num_gater_hidden=5,
                  output_scale=1.0, inputs="uniform", batch_seed=1)
"""The float64 8-gate net at its initialisation and 4 uniform examples (their own seed)."""


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].names() == b[name].names()
        for key in a[name].names():
            x, y = a[name][key], b[name][key]
            assert x.count == y.count and torch.equal(x.mean, y.mean) and torch.equal(x.m2, y.m2)


@pytest.mark.parametrize("path", ["fast", "generic"])
@pytest.mark.parametrize("higher_moments", [False, True])
def test_state_dict_round_trip(path, higher_moments):
    net, batch = problem()
    runs = run_draws(net, {"reinforce": get_estimator("reinforce")}, batch, num_draws=50, seed=0,
                     chunk_size=7, higher_moments=higher_moments, group_size=10, path=path)
    restored = {n: restore_accumulator(a.state_dict()) for n, a in runs.items()}
    assert {a.path for a in restored.values()} == {path}
    assert_identical(runs, restored)
    assert restored["reinforce"].groups.to_frame().equals(runs["reinforce"].groups.to_frame())


@pytest.mark.parametrize("path", ["fast", "generic"])
def test_resume_from_checkpoint_is_identical_and_refuses_other_runs(tmp_path, path):
    net, batch = problem()
    estimators = {"reinforce": get_estimator("reinforce"), "st": get_estimator("st")}
    options = dict(seed=3, chunk_size=10, group_size=20, paired_with="st", path=path)
    whole = run_draws(net, estimators, batch, num_draws=120, **options)
    checkpoint = tmp_path / "run.ckpt"
    # A first run that stops after 60 draws leaves a checkpoint of draws 0..59 ...
    partial = run_draws(net, estimators, batch, num_draws=60, **options)
    from estimator_lab.montecarlo.checkpoint import save_checkpoint
    from estimator_lab.montecarlo.runner import run_fingerprint

    plan = DrawPlan(num_draws=120, seed=3, group_size=20, paired_with="st")
    save_checkpoint(checkpoint, run_fingerprint(net, estimators, batch, plan, path), 60, partial)
    # ... and the resumed run ends with exactly the statistics of the uninterrupted one.
    resumed = run_draws(net, estimators, batch, num_draws=120, checkpoint=checkpoint, **options)
    assert_identical(whole, resumed)
    for name in whole:
        assert resumed[name].groups.to_frame().equals(whole[name].groups.to_frame())
    with pytest.raises(CheckpointMismatch, match="differs in seed"):
        run_draws(net, estimators, batch, num_draws=120, checkpoint=checkpoint,
                  **(options | {"seed": 4}))
    other = "generic" if path == "fast" else "fast"
    with pytest.raises(CheckpointMismatch, match="differs in path"):
        run_draws(net, estimators, batch, num_draws=120, checkpoint=checkpoint,
                  **(options | {"path": other}))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04broken zip"])
def test_a_corrupt_checkpoint_is_refused_in_one_line(tmp_path, content):
    net, batch = problem()
    checkpoint = tmp_path / "run.ckpt"
    checkpoint.write_bytes(content)
    with pytest.raises(ValueError, match=r"^checkpoint .*run.ckpt is not a readable torch.save "
                                         r"file \(.*\)$") as caught:
        run_draws(net, {"st": get_estimator("st")}, batch, num_draws=4, seed=0,
                  checkpoint=checkpoint)
    assert "\n" not in str(caught.value)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from test_resilience import problem
    import estimator_lab.montecarlo.runner as runner
    from estimator_lab.estimators import get_estimator
    from estimator_lab.montecarlo import run_draws
    save, saved = runner.save_checkpoint, []
    def save_and_count(path, fingerprint, stop, accumulators):
        save(path, fingerprint, stop, accumulators)
        saved.append(stop)
        if stop == {kill_at}:  # SIGKILL itself right after the checkpoint of draws 0..stop-1
            os.kill(os.getpid(), signal.SIGKILL)
    runner.save_checkpoint = save_and_count
    net, batch = problem()
    runs = run_draws(net, {{"reinforce": get_estimator("reinforce")}}, batch, num_draws=3000,
                     seed=5, chunk_size=25, checkpoint={path!r}, checkpoint_every_s=0)
    moments = {{k: (m.count, m.mean, m.m2) for k, m in runs["reinforce"].compute().items()}}
    torch.save({{"first_save": saved[0], "moments": moments}}, {out!r})
""")
KILL_AT = 1000
"""The draw count of the checkpoint after which the first run kills itself (a checkpoint after
every chunk of 25 draws, so the kill falls mid-run whatever the machine's speed: killing it
from outside after a sleep raced the run's end once the fast path made it take well under a
second)."""


def test_sigkill_then_resume_ends_identical(tmp_path):
    """A run killed with SIGKILL mid-way and started again ends with the statistics of an
    uninterrupted run."""
    tests = os.path.dirname(__file__)
    path, out = str(tmp_path / "kill.ckpt"), str(tmp_path / "final.pt")
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT.format(
        tests=tests, path=path, out=out, kill_at=KILL_AT)], timeout=120)
    assert killed.returncode == -signal.SIGKILL and not os.path.exists(out)
    assert torch.load(path, weights_only=False)["next_draw"] == KILL_AT
    script = KILL_SCRIPT.format(tests=tests, path=path, out=out, kill_at=0)
    subprocess.run([sys.executable, "-c", script], check=True)
    # A write cut by the kill may leave a hidden temporary: the next save removes it.
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    resumed = torch.load(out)
    assert resumed["first_save"] == KILL_AT + 25  # it went on from the checkpoint
    net, batch = problem()
    whole = run_draws(net, {"reinforce": get_estimator("reinforce")}, batch, num_draws=3000,
                      seed=5, chunk_size=25)["reinforce"]
    for key, (count, mean, m2) in resumed["moments"].items():
        assert count == 3000
        assert torch.equal(mean, whole[key].mean) and torch.equal(m2, whole[key].m2)


class NaNAtDraw(GradientEstimator):
    """REINFORCE whose draw is NaN when the first uniform is below 0.05 (about 1 in 20)."""

    name = "nan-at-draw"

    def surrogate(self, graph, prepared, noise, state):
        value = get_estimator("reinforce").surrogate(graph, prepared, noise, state)
        return value * torch.where(noise.reshape(-1)[0] < 0.05, torch.nan, 1.0)


def test_nan_stops_naming_estimator_draw_and_tensor_or_is_skipped():
    net, batch = problem()
    with pytest.raises(NonFiniteDrawError,
                       match=r"estimator 'broken', draw \d+: gradient of 'gate_logits' is nan"):
        run_draws(net, {"broken": NaNAtDraw()}, batch, num_draws=200, seed=0)
    runs = run_draws(net, {"broken": NaNAtDraw()}, batch, num_draws=200, seed=0,
                     nan_policy="skip")["broken"]
    assert 0 < len(runs.skipped) < 40
    assert runs["output.bias"].count == 200 - len(runs.skipped)
    assert runs["expert.weight"].count == 200 - len(runs.skipped)


def test_the_nan_hint_names_the_keyword_and_the_command_line_flag():
    net, batch = problem()
    with pytest.raises(ValueError, match=r"nan_policy='skip' \(command line: --nan-policy "
                                         r"skip\)"):
        run_draws(net, {"broken": NaNAtDraw()}, batch, num_draws=200, seed=0)


@pytest.mark.parametrize("path", ["fast", "generic"])
def test_skipping_every_draw_ends_in_one_line(path):
    """#22 item 5: every draw non-finite under `skip` (NaN gate-logit bias) used to leave
    accumulators without moments (a KeyError later); now one ValueError names the count."""
    net, batch = problem()
    with torch.no_grad():
        net.gater_out.bias[0] = torch.nan
    with pytest.raises(ValueError, match=r"^all 30 draws of 'st' were non-finite"):
        run_draws(net, {"st": get_estimator("st")}, batch, num_draws=30, seed=0,
                  nan_policy="skip", path=path)


@pytest.mark.parametrize("chunk_size", [1, 7, 256])
def test_skipped_draws_agree_between_paths_and_chunk_sizes(chunk_size):
    """Under `skip`, both paths keep the same draws and the same complete groups (fixed by
    draw index, whatever the chunk size)."""
    net, batch = problem()
    options = dict(num_draws=200, seed=0, nan_policy="skip", group_size=10)
    fast = run_draws(net, {"broken": NaNAtDraw()}, batch, chunk_size=chunk_size, **options)
    generic = run_draws(net, {"broken": NaNAtDraw()}, batch, chunk_size=32, path="generic",
                        **options)
    assert fast["broken"].path == "fast" and generic["broken"].path == "generic"
    assert fast["broken"].skipped == generic["broken"].skipped
    a, b = fast["broken"].groups.to_frame(), generic["broken"].groups.to_frame()
    assert a[["name", "group"]].equals(b[["name", "group"]])
    skipped_groups = {i // 10 for i in generic["broken"].skipped}
    assert skipped_groups.isdisjoint(set(b["group"]))
    torch.testing.assert_close(torch.tensor(a["total_variance"].to_numpy()),
                               torch.tensor(b["total_variance"].to_numpy()), rtol=1e-10, atol=0)


def test_shares_of_draws_merge_to_the_single_run():
    net, batch = problem()
    estimators = {"reinforce": get_estimator("reinforce")}
    whole = run_draws(net, estimators, batch, num_draws=90, seed=2, chunk_size=9,
                      group_size=10)["reinforce"]
    first = run_draws(net, estimators, batch, num_draws=47, seed=2, chunk_size=9,
                      group_size=10)["reinforce"]
    second = run_draws(net, estimators, batch, num_draws=43, seed=2, chunk_size=9,
                       first_draw=47, group_size=10)["reinforce"]
    first.merge(second)
    assert whole.path == "fast"
    for key in whole.names():
        torch.testing.assert_close(first[key].mean, whole[key].mean, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(first[key].m2, whole[key].m2, rtol=1e-12, atol=1e-15)
    assert first.groups.to_frame()["group"].tolist() == whole.groups.to_frame()["group"].tolist()


def _gloo_worker(rank, world_size, port, out):
    import torch.distributed as dist

    from estimator_lab.montecarlo.distributed import run_draws_distributed

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        net, batch = problem()
        merged = run_draws_distributed(net, {"st": get_estimator("st")}, batch, num_draws=60,
                                       seed=4, chunk_size=8)
        if rank == 0:
            torch.save({k: (m.count, m.mean, m.m2) for k, m in merged["st"].compute().items()},
                       out)
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_gloo_workers_equal_one_process(tmp_path, monkeypatch):
    import socket

    # The spawned workers unpickle `_gloo_worker` from this module by its importlib-mode name
    # (`tests.montecarlo.test_resilience`): the repository root must be on their path, as it is
    # under `python -m pytest` but not under the bare `pytest` script.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "merged.pt")
    mp.spawn(_gloo_worker, args=(2, port, out), nprocs=2, join=True)
    merged = torch.load(out)
    net, batch = problem()
    single = run_draws(net, {"st": get_estimator("st")}, batch, num_draws=60, seed=4,
                       chunk_size=8)["st"]
    for key, (count, mean, m2) in merged.items():
        assert count == 60
        torch.testing.assert_close(mean, single[key].mean, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(m2, single[key].m2, rtol=1e-12, atol=1e-15)
