"""Start-up time of the `estimator-lab` command against a bare Python and `import torch`.

Question: how long do `estimator-lab --help`, `estimator-lab bias --help`, an argument error and
`estimator-lab estimators` take, next to `python -c pass` and `python -c "import torch"` on the
same machine in the same run? The parser imports no torch, pandas or matplotlib, so the help
should cost about a bare Python start; `estimators` imports the registry, hence torch.

Each command runs `--repeats` times in a fresh process, the commands taking turns (round robin)
so that a change of the machine's load touches all of them alike; the table gives the median,
minimum and maximum wall time. Writes `results.csv` (one row per run), `manifest.json` and
`report.md` to `--out`.

    python analyses/startup/run.py [--repeats 15] [--out reports/startup]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _console_script() -> list[str]:
    """The `estimator-lab` console script beside this Python, or `python -m estimator_lab.cli`."""
    script = Path(sys.executable).parent / "estimator-lab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "estimator_lab.cli"]


def commands() -> dict[str, list[str]]:
    """Name -> command line of each measured command."""
    cli = _console_script()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "estimator-lab --help": [*cli, "--help"],
        "estimator-lab bias --help": [*cli, "bias", "--help"],
        "estimator-lab bias --draws abc (argument error)": [*cli, "bias", "--graph", "toy:n=3",
                                                            "--out", "x", "--draws", "abc"],
        "estimator-lab train --help": [*cli, "train", "--help"],
        "estimator-lab estimators": [*cli, "estimators"],
    }


def measure(repeats: int) -> list[dict]:
    """`repeats` wall times of every command, round robin, one row per run."""
    rows = []
    for repeat in range(repeats):
        for name, argv in commands().items():
            started = time.perf_counter()
            status = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    check=False).returncode
            rows.append({"command": name, "repeat": repeat, "status": status,
                         "wall_s": round(time.perf_counter() - started, 4)})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Median, minimum and maximum wall time per command, and the median over `import torch`'s."""
    times = {}
    for row in rows:
        times.setdefault(row["command"], []).append(row["wall_s"])
    torch_median = statistics.median(times['python -c "import torch"'])
    return [{"command": name, "runs": len(values), "median_s": statistics.median(values),
             "min_s": min(values), "max_s": max(values),
             "of_import_torch": statistics.median(values) / torch_median}
            for name, values in times.items()]


def report(summary: list[dict], manifest: dict) -> str:
    """The Markdown report."""
    by_name = {row["command"]: row for row in summary}
    help_ratio = by_name["estimator-lab --help"]["of_import_torch"]
    lines = [
        "# Start-up time of `estimator-lab`", "",
        "**Question.** Does `estimator-lab --help` (and every `COMMAND --help`, argument errors) "
        "answer in about the time of a bare Python start, without importing torch? "
        "Target (issue #20): `--help` under a quarter of `python -c \"import torch\"`.", "",
        f"**Setup.** Each command {summary[0]['runs']} times in a fresh process, the commands "
        "taking turns; wall time from start to exit. "
        f"Machine: {manifest['platform']}, {manifest['cpus']} CPUs, load average "
        f"{manifest['load_average']} at the start; Python {manifest['python']}; git "
        f"{manifest['git_revision']}.", "",
        "| command | median (s) | min (s) | max (s) | × import torch |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| `{row['command']}` | {row['median_s']:.3f} | {row['min_s']:.3f} | "
              f"{row['max_s']:.3f} | {row['of_import_torch']:.2f} |" for row in summary]
    verdict = "meets" if help_ratio < 0.25 else "misses"
    lines += [
        "",
        f"**Answer.** `estimator-lab --help` takes {help_ratio:.2f} of `import torch`'s median "
        f"time: it {verdict} the target of 0.25. `estimators` imports the estimator registry, "
        "whose modules import torch, so it costs about `import torch` plus the listing; every "
        "`COMMAND --help` and argument error answers before torch is imported.", "",
        "```", f"python analyses/startup/run.py --repeats {summary[0]['runs']} --out DIR", "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--repeats", type=int, default=15,
                        help="runs of each command (default: %(default)s)")
    parser.add_argument("--out", default="reports/startup",
                        help="report folder (default: %(default)s)")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    started = time.perf_counter()
    rows = measure(args.repeats)
    summary = summarise(rows)

    from estimator_lab.reporting import run_manifest, staged_directory

    manifest = run_manifest(
        seed=None, device="cpu", wall_time_s=time.perf_counter() - started, study="startup",
        repeats=args.repeats, cpus=os.cpu_count(),
        load_average=" / ".join(f"{value:.2f}" for value in load),
        commands={name: shlex.join(argv) for name, argv in commands().items()},
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with staged_directory(args.out) as stage:
        (stage / "results.csv").write_text(buffer.getvalue())
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (stage / "report.md").write_text(report(summary, manifest))
    print(f"report written to {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
