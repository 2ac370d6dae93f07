"""The test side of `fork_server.py`: start it, send it commands, compare what they wrote."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

SERVER = Path(__file__).with_name("fork_server.py")


class ForkServer:
    """`fork_server.py` in a subprocess; `run(argv, cwd, **faults)` runs one command.

    Args:
        log_dir: where each command's stdout and stderr go (`NNN.log`).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.count = 0
        self.process = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        assert ready == "ready\n", f"fork server did not start: {ready!r}"

    def run(self, argv: list[str], cwd: Path, **faults) -> dict:
        """Runs `estimator-lab ARGV` in `cwd` with `faults` (see `fork_server.py`); the answer
        with `log`, the command's output, added."""
        self.count += 1
        log = self.log_dir / f"{self.count:03d}.log"
        request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "log": str(log), **faults}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        assert not answer["timed_out"], f"{argv} hung: {log.read_text()}"
        return answer | {"log": log.read_text()}

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def read_trace(path: Path) -> list[tuple[str, str]]:
    """The `(source, target)` of every `os.replace` in a trace file, in order."""
    if not path.exists():
        return []
    return [tuple(line.split("\t")[1:]) for line in path.read_text().splitlines()]


def files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes in `folder`, by relative path (hidden files included)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def debris(folder: Path) -> list[str]:
    """Temporary files and staging or aside folders left below `folder` (hidden `*.tmp`,
    `.NAME.staging-*`, `.NAME.old-*`)."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob(".*")
                  if p.name.endswith(".tmp") or ".staging-" in p.name or ".old-" in p.name)


def equal_state_dicts(a: dict, b: dict) -> bool:
    """Whether two state dicts hold the same names and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def load_pt(path: Path):
    """A `.pt` file the package wrote, read with `weights_only=True`."""
    return torch.load(path, weights_only=True)


def log_without_timing(path: Path) -> pd.DataFrame:
    """A run's `log.csv` without `epoch_seconds` (wall time, the one column that may differ)."""
    return pd.read_csv(path).drop(columns=["epoch_seconds"])
