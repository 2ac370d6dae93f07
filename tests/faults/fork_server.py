"""A fork server for the fault battery: `estimator-lab` commands as killable child processes.

Importing torch and the package takes seconds; this process does it once (and runs no torch
operation, so no thread pool exists to break in a forked child), then reads one JSON request a
line on stdin, forks a child per request that runs `estimator_lab.cli.main(argv)` exactly as
the console script does, and answers one JSON line on stdout when the child has ended.

A request holds `argv`, `cwd`, `log` (the child's stdout and stderr) and optional faults:

- `kill_after`: seconds after the fork at which the server sends the child SIGKILL;
- `kill_at_replace`, `when`: the child sends itself SIGKILL at its `k`-th `os.replace` (every
  atomic write and folder swap of `reporting.files` ends in one), `"before"` the rename (the
  temporary file or staging folder is complete, not yet in place) or `"after"` it;
- `fail_replace`: the `k`-th `os.replace` raises `OSError(ENOSPC)` (a full disk);
- `fail_write`: the `k`-th file opened with `os.fdopen` (every `atomic_write_*`) receives
  half of its first write and then raises `OSError(ENOSPC)`;
- `trace`: a file to which every `os.replace` appends `k<TAB>source<TAB>target`;
- `checkpoint_every_s`: the seconds between Monte Carlo checkpoints of `variance` (the engine
  keyword the command leaves at 60 s; 0 checkpoints after every chunk);
- `env`: environment variables to set in the child; `timeout`: SIGKILL after this many
  seconds (a hung child), answered with `"timed_out": true`.

The answer holds `rc` (the exit status, or None), `signal` (the signal that ended the child,
or None) and `seconds` (fork to end).
"""

import errno
import json
import os
import signal
import sys
import time
import traceback


def preload() -> None:
    """Imports what the battery's commands use (no torch operation runs here)."""
    import estimator_lab.cli  # noqa: F401
    import estimator_lab.studies.bias_small_graphs  # noqa: F401
    import estimator_lab.studies.variance  # noqa: F401
    import estimator_lab.train.command  # noqa: F401
    import estimator_lab.train.trainer  # noqa: F401


def install_faults(request: dict) -> None:
    """Replaces `os.replace` and `os.fdopen` in this (child) process by faulty ones."""
    real_replace, real_fdopen = os.replace, os.fdopen
    replaces, opens = [0], [0]
    trace = request.get("trace")

    def replace(source, target, *args, **kwargs):
        replaces[0] += 1
        k = replaces[0]
        if trace:
            with open(trace, "a") as handle:
                handle.write(f"{k}\t{os.fspath(source)}\t{os.fspath(target)}\n")
        if request.get("fail_replace") == k:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        killing = request.get("kill_at_replace") == k
        if killing and request.get("when", "before") == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, target, *args, **kwargs)
        if killing:
            os.kill(os.getpid(), signal.SIGKILL)

    class FullDiskFile:
        """A file object whose first write stores half its bytes and fails with ENOSPC."""

        def __init__(self, handle):
            self.handle = handle

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(*args, **kwargs):
        opens[0] += 1
        handle = real_fdopen(*args, **kwargs)
        return FullDiskFile(handle) if request.get("fail_write") == opens[0] else handle

    os.replace, os.fdopen = replace, fdopen
    every = request.get("checkpoint_every_s")
    if every is not None:
        import estimator_lab.studies.variance as variance

        run_draws = variance.run_draws

        def run_draws_every(*args, **kwargs):
            return run_draws(*args, **kwargs, checkpoint_every_s=every)

        variance.run_draws = run_draws_every


def child(request: dict) -> None:
    """Runs one command in the forked child and ends it with the command's exit status."""
    rc = 1
    try:
        os.chdir(request["cwd"])
        os.environ.update(request.get("env", {}))
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.argv = ["estimator-lab", *request["argv"]]
        install_faults(request)
        from estimator_lab.cli import main

        rc = main(request["argv"])
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc if isinstance(rc, int) else 1)


def serve(request: dict) -> dict:
    """Forks a child for `request`, applies the timed kill, and describes how it ended."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        child(request)
    kill_after, timeout = request.get("kill_after"), request.get("timeout", 600.0)
    killed = timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        elapsed = time.monotonic() - started
        if not killed and kill_after is not None and elapsed >= kill_after:
            os.kill(pid, signal.SIGKILL)
            killed = True
        if not killed and elapsed >= timeout:
            os.kill(pid, signal.SIGKILL)
            killed = timed_out = True
        time.sleep(0.002)
    return {
        "rc": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "seconds": time.monotonic() - started, "timed_out": timed_out,
    }


def main() -> None:
    preload()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        out.write(json.dumps(serve(json.loads(line))) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
