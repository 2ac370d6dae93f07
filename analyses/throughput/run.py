"""Throughput of `estimator-lab variance` and of the engine's paths against a naive loop.

Question: on the full paper network (784 -> 400 tanh -> 2000 gates, expert 784 -> 2000, output
10; the variance command's seeded network and minibatch of 32 validation images; float32
draws, float64 moments), how long does the command a researcher runs take, as a whole process,
against the naive per-draw loop measured in the same run, and where does the fast path spend
its time?

Cases, each in a fresh process (its peak resident memory is `ru_maxrss` from `os.wait4`):

- `cli`: `estimator-lab variance --graph paper --estimators E --draws N --seed 0 --out DIR
  --quiet`, timed from start to exit: start-up, MNIST, the estimators' warm-up, the draws of
  `E` and of the paired `local-expectation` reference, and the report. The command always
  pairs with the reference on the paper network (it has no option to leave it out); the
  engine cases below give the figures without it.
- `engine` (one process per estimator): `run_draws` as the command calls it (chunks of 32,
  batch-means groups of 50) on the `fast` path, the `generic` (vmap) path and the `naive`
  loop (`method="loop"`, chunks of 1: one `torch.autograd.grad` per draw through a fresh
  forward pass, each draw folded into the float64 accumulator on its own), each alone and
  `+ref` (paired with `local-expectation`: both estimators' draws, per draw of `E`). The
  naive and generic loops time fewer draws than the fast path (`draws` column); their rates
  are per draw. Each mode gets one warm-up chunk first, and the modes take turns for
  `repeats` rounds: the rates are the best round's (`median_seconds` beside them). The fast
  and generic paths are checked to agree on the generic path's draws.
- `memory`: the fast path of the first estimator at 10^3 and 10^4 draws, to show that memory
  does not grow with the draws (the `cli` rows give the command's peak, reference included).
- `threads`: the first estimator's command at fewer draws, with torch's default threads and
  with `OMP_NUM_THREADS=1`.
- `profile`: cProfile of the fast path paired with the reference (`reinforce`): time by
  stage, and the torch operations by their own time.
- `before` (with `--before COMMIT`): the `fast` and `fast+ref` cases with `fastpath.py` and
  `noise.py` as they were at `COMMIT`, in the same run.

The 1-minute load average is recorded before and after every case: other processes on the
machine slow a case, and the report states it. Writes `results.csv`, `profile.csv`,
`manifest.json` and `report.md` to `--out`.

    python analyses/throughput/run.py [--quick] [--cli-draws 4000] [--before COMMIT]
                                      [--out reports/throughput]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import os
import platform
import pstats
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 0
REFERENCE = "local-expectation"
CHUNK_SIZE, GROUP_SIZE = 32, 50  # the variance command's defaults
FULL = {"estimators": ["reinforce", "st", "disarm", "rloo"], "fast": 256, "generic": 64,
        "naive": 16, "repeats": 3, "memory": [1_000, 10_000], "profile": 256, "threads": 500}
QUICK = {"estimators": ["reinforce"], "fast": 64, "generic": 16, "naive": 4, "repeats": 1,
         "memory": [100, 400], "profile": 32, "threads": 100}
QUICK_CONFIG = {"num_inputs": 20, "num_gater_hidden": 6, "num_gates": 12, "num_classes": 4}
QUICK_GRAPH = "tiny-conditional:gates=8"  # the quick `cli` case: no MNIST, exact reference
MODES = {  # name: (run_draws options, size of the plan entry giving the draws)
    "fast": ({"path": "fast"}, "fast"),
    "generic": ({"path": "generic"}, "generic"),
    "naive": ({"path": "generic", "method": "loop", "chunk_size": 1, "group_size": None},
              "naive"),
}
STAGES = {  # profile stage: (function, whose cumulative time it is)
    "noise (uniform_noise)": ("noise.py", "uniform_noise"),
    "draws: vmap(grad) forward and backward (FastDraws)": ("fastpath.py", "__call__"),
    "  of which the backward pass": ("~", "<method 'run_backward' of "
                                          "'torch._C._EngineBase' objects>"),
    "  of which the reference's gate flips (gate_flip_gains)": ("conditional.py",
                                                               "gate_flip_gains"),
    "paired differences (_difference)": ("runner.py", "_difference"),
    "non-finite check (finite_draw_rows)": ("engine.py", "finite_draw_rows"),
    "fold: Gram sums, dense moments, groups (FastAccumulator.update)": ("fastpath.py",
                                                                        "update"),
    "  of which dense moments and their groups (MomentAccumulator.update)": (
        "accumulators.py", "update"),
    "  of which shared-weight group parts (add_weight_part)": ("groups.py", "add_weight_part"),
    "read-out of the weights' moments (weight_moments)": ("fastpath.py", "weight_moments"),
}
COPIES = ("copy_", "to", "clone", "contiguous", "_to_copy", "cat", "stack")


# --- the problem and the children ---------------------------------------------------------


def problem(quick: bool):
    """The variance command's network and minibatch (seed 0; quick: a tiny seeded network)."""
    import torch

    from estimator_lab.testing import conditional_problem, paper_problem

    if not quick:
        return paper_problem(seed=SEED)
    return conditional_problem(batch_size=32, seed=SEED, dtype=torch.float32, output_scale=1.0,
                               inputs="uniform", **QUICK_CONFIG)


def estimators_for(name: str, paired: bool) -> dict:
    from estimator_lab.estimators import get_estimator

    return {n: get_estimator(n) for n in ([name, REFERENCE] if paired else [name])}


def timed_run(graph, batch, name: str, paired: bool, num_draws: int, mode: str) -> dict:
    """One timed `run_draws` after a one-chunk warm-up, every moment read out."""
    from estimator_lab.montecarlo import run_draws

    options = {"chunk_size": CHUNK_SIZE, "group_size": GROUP_SIZE,
               "paired_with": REFERENCE if paired else None} | MODES[mode][0]
    estimators = estimators_for(name, paired)
    warm = dict(options, group_size=None)
    run_draws(graph, estimators, batch, num_draws=options["chunk_size"], seed=SEED, **warm)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    runs = run_draws(graph, estimators, batch, num_draws=num_draws, seed=SEED, **options)
    moments = {key: acc.compute() for key, acc in runs.items()}
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "draws": num_draws, "path": runs[name].path,
            "load_before": load, "load_after": os.getloadavg()[0], "moments": moments[name]}


def relative_gap(a: dict, b: dict, field: str) -> float:
    """The largest `max|a - b| / max|b|` over tracked tensors (tensors with `b` all zero are
    compared absolutely)."""
    gaps = []
    for key in b:
        x, y = getattr(a[key], field), getattr(b[key], field)
        scale = float(y.abs().max())
        gaps.append(float((x - y).abs().max()) / (scale if scale > 0 else 1.0))
    return max(gaps)


def child_engine(name: str, quick: bool, modes: list[str], repeats: int) -> list[dict]:
    """Every mode alone and `+ref` for one estimator, `repeats` rounds taking turns (so that a
    change of load touches every mode alike), and the fast/generic agreement."""
    graph, batch = problem(quick)
    plan = QUICK if quick else FULL
    timings, moments = {}, {}
    for _ in range(repeats):
        for mode in modes:
            for paired in (False, True):
                result = timed_run(graph, batch, name, paired, plan[MODES[mode][1]], mode)
                moments[mode, paired] = result.pop("moments")
                timings.setdefault((mode, paired), []).append(result)
    rows = []
    for (mode, paired), runs in timings.items():
        seconds = sorted(r["seconds"] for r in runs)
        rows.append({"case": "engine", "mode": mode + ("+ref" if paired else ""),
                     "estimator": name, **min(runs, key=lambda r: r["seconds"]),
                     "repeats": len(runs), "median_seconds": seconds[len(seconds) // 2],
                     "load_before": runs[0]["load_before"], "load_after": runs[-1]["load_after"]})
    if "fast" in modes and "generic" in modes:  # the same first draws on both paths
        for paired in (False, True):
            fast = timed_run(graph, batch, name, paired, plan["generic"], "fast")["moments"]
            generic = moments["generic", paired]
            row = next(r for r in rows if r["mode"] == "generic" + ("+ref" if paired else ""))
            row["mean_gap"] = relative_gap(fast, generic, "mean")
            row["variance_gap"] = relative_gap(fast, generic, "variance")
    return rows


def child_memory(name: str, quick: bool, num_draws: int) -> list[dict]:
    """The fast path at `num_draws` (its peak memory: the parent's `wait4`)."""
    graph, batch = problem(quick)
    result = timed_run(graph, batch, name, False, num_draws, "fast")
    result.pop("moments")
    return [{"case": "memory", "mode": "fast", "estimator": name, **result}]


def child_profile(name: str, quick: bool) -> list[dict]:
    """cProfile of the fast path paired with the reference: stages and torch operations."""
    from estimator_lab.montecarlo import run_draws

    graph, batch = problem(quick)
    estimators = estimators_for(name, True)
    options = {"chunk_size": CHUNK_SIZE, "group_size": GROUP_SIZE, "paired_with": REFERENCE}
    run_draws(graph, estimators, batch, num_draws=CHUNK_SIZE, seed=SEED, **options)
    num_draws = (QUICK if quick else FULL)["profile"]
    profiler = cProfile.Profile()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    profiler.enable()
    runs = run_draws(graph, estimators, batch, num_draws=num_draws, seed=SEED, **options)
    for accumulator in runs.values():
        accumulator.compute()
    profiler.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats
    rows = [{"kind": "total", "name": f"run_draws + read-out, {num_draws} draws of {name} "
             f"and {REFERENCE}", "seconds": total, "calls": 1}]
    for stage, (file, function) in STAGES.items():
        seconds = calls = 0
        for (path, _, func), (_, ncalls, tottime, cumtime, _) in stats.items():
            if func == function and (path == file or Path(path).name == file):
                seconds += tottime if file == "~" else cumtime  # a builtin: its own time
                calls += ncalls
        rows.append({"kind": "stage", "name": stage, "seconds": seconds, "calls": calls})
    torch_ops = {}
    for (path, _, func), (_, ncalls, tottime, _, _) in stats.items():
        if path == "~" and "torch" in func:  # "<method 'sum' of ...>", "<built-in method ...>"
            op = func.split("'")[1] if "'" in func else func.removeprefix(
                "<built-in method ").removesuffix(">")
            seconds, calls = torch_ops.get(op, (0.0, 0))
            torch_ops[op] = (seconds + tottime, calls + ncalls)
    for op, (seconds, calls) in sorted(torch_ops.items(), key=lambda kv: -kv[1][0])[:15]:
        rows.append({"kind": "torch op", "name": op, "seconds": seconds, "calls": calls})
    copies = [v for op, v in torch_ops.items() if op in COPIES]
    rows.append({"kind": "copies", "name": "copies and conversions (" + ", ".join(COPIES) + ")",
                 "seconds": sum(s for s, _ in copies), "calls": sum(c for _, c in copies)})
    python = sum(tottime for (path, _, _), (_, _, tottime, _, _) in stats.items()
                 if path != "~")
    rows.append({"kind": "python", "name": "Python code itself (own time of every Python "
                 "function: per-chunk bookkeeping, vmap and autograd machinery)",
                 "seconds": python, "calls": 0})
    for row in rows:
        row |= {"share": row["seconds"] / total, "draws": num_draws, "load_before": load,
                "load_after": os.getloadavg()[0]}
    return rows


def use_sources(folder: str) -> None:
    """Makes `fastpath.py` and `noise.py` from `folder` the modules the runner uses (of a commit
    since `montecarlo/runner.py` exists: an earlier fastpath.py imports `run_plan` from the
    engine). The noise module is registered under both its names, `estimator_lab.noise` and
    the `estimator_lab.montecarlo.noise` it had before it moved to the ground floor."""
    import estimator_lab.montecarlo as package
    from estimator_lab.montecarlo import runner

    noise = _load("estimator_lab.noise", Path(folder) / "noise.py")
    sys.modules["estimator_lab.montecarlo.noise"] = noise
    package.fastpath = _load("estimator_lab.montecarlo.fastpath", Path(folder) / "fastpath.py")
    runner.fastpath = package.fastpath


def _load(name: str, path: Path):
    """The module `name` executed from the file `path`, registered in `sys.modules`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def child(args: argparse.Namespace) -> None:
    """`--child KIND:ESTIMATOR[:DRAWS]`: runs one case and prints its rows as JSON."""
    kind, name, *rest = args.child.split(":")
    if args.sources:
        use_sources(args.sources)
    if kind == "engine":
        rows = child_engine(name, args.quick, list(MODES), args.repeats)
    elif kind == "before":
        rows = [dict(r, case="before") for r in child_engine(name, args.quick, ["fast"],
                                                             args.repeats)]
    elif kind == "memory":
        rows = child_memory(name, args.quick, int(rest[0]))
    else:
        rows = child_profile(name, args.quick)
    print(json.dumps(rows))


# --- the parent ---------------------------------------------------------------------------


def run_child(argv: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """`(wall seconds, peak RSS MiB, stdout)` of a child process (`os.wait4`: its own peak)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed ({process.returncode}):\n"
                               f"{err.read()[-3000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def console_script() -> list[str]:
    """The `estimator-lab` console script beside this Python, or `python -m estimator_lab.cli`."""
    script = Path(sys.executable).parent / "estimator-lab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "estimator_lab.cli"]


def cli_case(name: str, draws: int, quick: bool, work: Path, threads: str | None) -> dict:
    """The whole `estimator-lab variance` process for one estimator (`threads`: None, or
    `"default"` or a count for `OMP_NUM_THREADS`: the threads case)."""
    out = work / f"variance-{name}-{draws}-{threads or 'default'}"
    graph = QUICK_GRAPH if quick else "paper"
    argv = [*console_script(), "variance", "--graph", graph, "--estimators", name,
            "--draws", str(draws), "--seed", str(SEED), "--out", str(out), "--quiet"]
    if quick:
        argv += ["--group-size", "10"]
    env = None if threads in (None, "default") else os.environ | {"OMP_NUM_THREADS": threads}
    load = os.getloadavg()[0]
    seconds, rss, _ = run_child(argv, env)
    manifest = json.loads((out / "manifest.json").read_text())
    mode = {None: "variance", "default": "variance, threads"}.get(threads,
                                                                  f"OMP_NUM_THREADS={threads}")
    return {"case": "cli", "mode": mode,
            "estimator": name, "draws": draws, "seconds": seconds, "peak_rss_mib": rss,
            "path": manifest["engine_path"][name], "inner_wall_s": manifest["wall_time_s"],
            "load_before": load, "load_after": os.getloadavg()[0],
            "command": shlex.join(["estimator-lab", *argv[len(console_script()):]])}


def child_case(spec: str, quick: bool, sources: str | None = None, repeats: int = 1
               ) -> list[dict]:
    argv = [sys.executable, __file__, "--child", spec, "--repeats", str(repeats)]
    argv += ["--quick"] if quick else []
    argv += ["--sources", sources] if sources else []
    _, rss, stdout = run_child(argv)
    return [dict(row, peak_rss_mib=rss) for row in json.loads(stdout.strip().splitlines()[-1])]


def old_sources(commit: str, folder: Path) -> Path:
    """`fastpath.py` and `noise.py` of `commit`, written to `folder` (`noise.py` from
    `estimator_lab/`, or from `estimator_lab/montecarlo/` where it lived before)."""
    root = Path(__file__).resolve().parents[2]
    candidates = {"fastpath": ["montecarlo/fastpath.py"],
                  "noise": ["noise.py", "montecarlo/noise.py"]}
    for name, paths in candidates.items():
        for path in paths:
            shown = subprocess.run(["git", "show", f"{commit}:estimator_lab/{path}"], cwd=root,
                                   capture_output=True, text=True)
            if shown.returncode == 0:
                (folder / f"{name}.py").write_text(shown.stdout)
                break
        else:
            raise FileNotFoundError(f"{commit} has no estimator_lab/{paths[0]}")
    return folder


def machine() -> dict:
    """The CPU, its core count and torch's thread count."""
    import torch

    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/throughput")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny network and a small graph for the command, few draws")
    parser.add_argument("--estimators", default=None,
                        help="comma-separated (default: reinforce,st,disarm,rloo; quick: "
                             "reinforce)")
    parser.add_argument("--add-to", metavar="DIR", default=None,
                        help="keep DIR's rows of the estimators this run does not measure")
    parser.add_argument("--cli-draws", type=int, default=None,
                        help="draws of the timed variance command (default: 4000; quick: 100)")
    parser.add_argument("--before", metavar="COMMIT", default=None,
                        help="also time the fast path with fastpath.py and noise.py of COMMIT")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of the engine modes (default: 3; quick: 1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sources", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import pandas as pd

    from estimator_lab.reporting import run_manifest, staged_directory

    plan = dict(QUICK if args.quick else FULL)
    if args.estimators:
        plan["estimators"] = args.estimators.split(",")
    if args.repeats:
        plan["repeats"] = args.repeats
    cli_draws = args.cli_draws or (100 if args.quick else 4000)
    kept, kept_profile, earlier = earlier_run(args.add_to, plan["estimators"])
    started = time.perf_counter()
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        before = old_sources(args.before, work) if args.before else None
        for name in plan["estimators"]:  # the whole command and the engine, side by side
            rows.append(cli_case(name, cli_draws, args.quick, work, None))
            rows += child_case(f"engine:{name}", args.quick, repeats=plan["repeats"])
            if before is not None:
                rows += child_case(f"before:{name}", args.quick, str(before), plan["repeats"])
            print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        name = plan["estimators"][0]
        if kept_profile is None:  # the cases measured once
            for threads in ("default", "1"):
                rows.append(cli_case(name, plan["threads"], args.quick, work, threads))
            for draws in plan["memory"]:
                rows += child_case(f"memory:{name}:{draws}", args.quick)
            profile = pd.DataFrame(child_case(f"profile:{name}", args.quick))
        else:
            profile = kept_profile
    results = pd.DataFrame(rows).drop(columns=["command"]).assign(
        draws_per_second=lambda f: f["draws"] / f["seconds"])
    results = pd.concat([kept, results], ignore_index=True)
    commands = sorted({r["command"] for r in rows if "command" in r})
    manifest = run_manifest(
        seed=SEED, device="cpu", wall_time_s=time.perf_counter() - started, study="throughput",
        quick=args.quick, machine=machine(), load_average_at_start=load_start,
        load_average_at_end=os.getloadavg(), plan=plan, cli_draws=cli_draws,
        chunk_size=CHUNK_SIZE, group_size=GROUP_SIZE, reference=REFERENCE,
        before=args.before, commands=commands, command=shlex.join(sys.argv),
        earlier_runs=earlier)
    report = render(results, profile, manifest)
    with staged_directory(args.out) as stage:
        results.to_csv(stage / "results.csv", index=False)
        profile.to_csv(stage / "profile.csv", index=False)
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (stage / "report.md").write_text(report)
    print(f"report written to {Path(args.out) / 'report.md'}")


def earlier_run(folder: str | None, estimators: list[str]):
    """`(rows, profile, manifests)` kept from an earlier run's folder: its rows of the other
    estimators (and its memory and threads rows, if it has a profile), its profile (None if
    there is none) and its manifest (with those it kept in turn)."""
    import pandas as pd

    if folder is None:
        return pd.DataFrame(), None, []
    results = pd.read_csv(Path(folder) / "results.csv")
    keep = ~results["estimator"].isin(estimators) | results["case"].isin(["memory"]) | (
        results["mode"] != "variance") & (results["case"] == "cli")
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    earlier = [*manifest.pop("earlier_runs", []), manifest]
    profile_file = Path(folder) / "profile.csv"
    profile = pd.read_csv(profile_file) if profile_file.is_file() else None
    if profile is None:  # the once-measured cases are measured again
        keep &= ~results["case"].isin(["memory"]) & ~(
            (results["case"] == "cli") & (results["mode"] != "variance"))
    return results[keep], profile, earlier


# --- the report ---------------------------------------------------------------------------


def rates(results):
    """Per estimator: draws of `E` per second in each engine mode (and `before`)."""
    engine = results[results["case"].isin(["engine", "before"])]
    label = engine["mode"].where(engine["case"] == "engine", engine["mode"] + " (before)")
    table = engine.assign(mode=label).pivot(index="estimator", columns="mode",
                                            values="draws_per_second")
    order = [m for m in ("fast", "generic", "naive", "fast+ref", "generic+ref", "naive+ref",
                         "fast (before)", "fast+ref (before)") if m in table.columns]
    return table[order].reindex(results.loc[results["case"] == "cli", "estimator"].unique())


def headline(results):
    """Per estimator: the whole command against the naive loop for the same number of draws.

    `naive` is `draws / rate` of the naive loop of the estimator alone; `naive+ref` of the
    naive loop of the estimator and the reference (the command's work)."""
    import pandas as pd

    speed = rates(results)
    rows = []
    for row in results[(results["case"] == "cli") & (results["mode"] == "variance")].itertuples():
        naive_s = row.draws / speed.loc[row.estimator, "naive"]
        naive_ref_s = row.draws / speed.loc[row.estimator, "naive+ref"]
        rows.append({"estimator": row.estimator, "draws": row.draws, "path": row.path,
                     "command_s": row.seconds, "naive_loop_s": naive_s,
                     "ratio": naive_s / row.seconds, "naive_loop_with_reference_s": naive_ref_s,
                     "ratio_with_reference": naive_ref_s / row.seconds,
                     "peak_rss_mib": row.peak_rss_mib, "load": row.load_after})
    return pd.DataFrame(rows)


def render(results, profile, manifest: dict) -> str:
    """The Markdown report."""
    from estimator_lab.reporting import markdown_table

    quick = manifest["quick"]
    plan = manifest["plan"]
    reference = (f"the exact gradient of `{QUICK_GRAPH}` (quick: no reference draws)" if quick
                 else f"the draws of the paired `{REFERENCE}` reference")
    network = (f"a tiny network ({', '.join(f'{k}={v}' for k, v in QUICK_CONFIG.items())}; the "
               f"command on `{QUICK_GRAPH}`)" if quick else
               "the full paper network (2,706,010 parameters), the variance command's seeded "
               "network and minibatch of 32 validation images")
    head = headline(results)
    speed = rates(results)
    ratios = speed.assign(**{
        "fast / naive": speed["fast"] / speed["naive"],
        "generic / naive": speed["generic"] / speed["naive"],
        "fast / generic": speed["fast"] / speed["generic"],
        "fast+ref / naive+ref": speed["fast+ref"] / speed["naive+ref"],
        "fast+ref / generic+ref": speed["fast+ref"] / speed["generic+ref"],
    })[["fast / naive", "generic / naive", "fast / generic", "fast+ref / naive+ref",
        "fast+ref / generic+ref"]]
    if "fast (before)" in speed.columns:
        ratios["fast: after / before"] = speed["fast"] / speed["fast (before)"]
        ratios["fast+ref: after / before"] = speed["fast+ref"] / speed["fast+ref (before)"]
    agreement = results[results["mode"].isin(["generic", "generic+ref"])
                        & (results["case"] == "engine")][
        ["estimator", "mode", "draws", "mean_gap", "variance_gap"]]
    memory = results[results["case"].isin(["memory", "cli"])][
        ["case", "mode", "estimator", "draws", "seconds", "peak_rss_mib", "load_after"]]
    threads = results[(results["case"] == "cli") & (results["mode"] != "variance")][
        ["mode", "estimator", "draws", "seconds", "peak_rss_mib", "load_before", "load_after"]]
    stages = profile[profile["kind"].isin(["total", "stage", "copies", "python"])][
        ["name", "seconds", "share", "calls"]]
    ops = profile[profile["kind"] == "torch op"][["name", "seconds", "share", "calls"]]
    every = results.reindex(columns=[
        "case", "mode", "estimator", "draws", "seconds", "median_seconds", "repeats",
        "draws_per_second", "peak_rss_mib", "path", "load_before", "load_after"])
    m = manifest["machine"]
    loads = (f"{manifest['load_average_at_start'][0]:.2f} at the start and "
             f"{manifest['load_average_at_end'][0]:.2f} at the end (1-minute load average; "
             f"per case in `results.csv`)")
    best = head["ratio"].max() if len(head) else float("nan")
    single = sorted(results.loc[(results["case"] == "engine")
                                & ~(results["repeats"].fillna(1) > 1), "estimator"].unique())
    rounds_note = (f" Measured with one round only (an earlier version of this script): "
                   f"{', '.join(f'`{e}`' for e in single)}; their rates are single timings."
                   if single and not quick else "")
    share = profile.set_index("name")["share"]
    draws_share = share.filter(like="FastDraws").sum()
    flips_share = share.filter(like="gate_flip_gains").sum()
    fold_share = share.filter(like="FastAccumulator.update").sum()
    noise_share = share.filter(like="uniform_noise").sum()
    top_ops = ops.nlargest(3, "seconds")
    named_ops = ", ".join(f"`{r.name}` {r.share:.0%}" for r in top_ops.itertuples())
    pairing = (speed["fast"] / speed["fast+ref"]).agg(["min", "max"])
    reading = (f"In the profile, the draws (the estimators' forward and backward passes under "
               f"vmap) take {draws_share:.0%} of the fast path's time, of which the "
               f"`{REFERENCE}` reference's gate flips (`ConditionalNetwork.gate_flip_gains`) "
               f"take {flips_share:.0%}; folding the draws into the moments (three "
               f"accumulators: the estimator, the reference and their paired differences) "
               f"takes {fold_share:.0%} and the noise {noise_share:.0%}. The torch operations "
               f"with the most time of their own: {named_ops}. Pairing with the reference "
               f"makes each draw of the estimator {pairing['min']:.1f}x to "
               f"{pairing['max']:.1f}x as long (`fast` against `fast+ref`).")
    with_reference = head["ratio_with_reference"]
    verdict = (f"The whole command reaches {head['ratio'].min():.2f}x to {best:.2f}x the naive "
               f"loop of the estimator alone ({'at' if head['ratio'].min() >= 20 else 'short of'}"
               f" the 20x target), and {with_reference.min():.2f}x to "
               f"{with_reference.max():.2f}x the naive loop doing the command's work (the "
               f"estimator and the reference; "
               f"{'at' if with_reference.min() >= 20 else 'short of'} 20x).")
    return f"""# Throughput: `estimator-lab variance` and the engine's paths against a naive loop

**Question.** On {network}, float32 draws and float64 moments: how long does
`estimator-lab variance` take as a whole process against the naive per-draw loop measured in
the same run, how do the fast path, the generic (vmap) path and the naive loop compare per
estimator, with and without the paired reference, at what peak memory, and where does the fast
path spend its time?

**Machine.** {m['cpu']}, {m['cores']} cores, torch {manifest['versions']['torch']} with
{m['torch_threads']} threads; {manifest['platform']}. Load: {loads}. Other processes shared
the cores: every figure is a single timing under that load.

## The command against the naive loop

{verdict}

`command_s` is the wall time of
`estimator-lab variance --graph {'paper' if not quick else QUICK_GRAPH} --estimators E
--draws {manifest['cli_draws']} --seed {SEED} --out DIR --quiet` from start to exit (start-up,
data, warm-up of the estimators, the draws of `E`, {reference}, the report).
`naive_loop_s` is {manifest['cli_draws']} draws at the naive loop's rate measured in this run
(`{plan['naive']}` timed draws; one `torch.autograd.grad` per draw, folded one at a time);
`naive_loop_with_reference_s` the same loop making the reference's draws too.

{markdown_table(head)}

## Draws of the estimator per second, by engine mode

Modes as the command runs them (chunks of {CHUNK_SIZE}, groups of {GROUP_SIZE}): `fast`
({plan['fast']} draws), `generic` (vmap, {plan['generic']} draws), `naive` ({plan['naive']}
draws); `+ref`: paired with `{REFERENCE}` (both draws per draw of the estimator). The command
has no option to leave the reference out, so the `+ref` columns are its engine work. Best of
{plan.get('repeats', 1)} rounds taking turns (an estimator measured by an earlier run may have
fewer: `repeats` in `results.csv`).

{markdown_table(speed.reset_index())}

{markdown_table(ratios.reset_index())}

{rounds_note.strip()}

{reading}

## Agreement of the fast and generic paths

The fast path on the generic path's draws (same seed): the largest `max|fast - generic| /
max|generic|` over the tracked tensors. The float32 draws themselves differ by rounding
(the fast path forms `Delta^T H` where the generic path differentiates the weight): in float64
the two paths agree to ~1e-14 (`tests/montecarlo/test_fastpath.py`).

{markdown_table(agreement)}

## Peak memory

`peak_rss_mib` is the child process's `ru_maxrss` (Python, torch and MNIST included). The
`memory` rows run the fast path of the estimator alone; the `cli` rows are the whole command,
the reference's draws included.

{markdown_table(memory)}

## Threads

The first estimator's command at {plan['threads']} draws with torch's default threads and with
`OMP_NUM_THREADS=1`: on a 2-core machine shared with other processes, a two-thread elementwise
kernel waits for the busy core.

{markdown_table(threads)}

## Profile of the fast path

cProfile of `run_draws` paired with the reference ({int(profile['draws'].iloc[0])} draws of
`{plan['estimators'][0]}` and `{REFERENCE}`, chunks of {CHUNK_SIZE}, groups of {GROUP_SIZE}),
and the moments read out. Stages are cumulative times of the functions named (nested stages
indented); copies and the Python code's own time cut across them.

{markdown_table(stages)}

Torch operations by their own time:

{markdown_table(ops)}

## Every case

{markdown_table(every)}

```
{manifest['command']}
```
"""


if __name__ == "__main__":
    main()
