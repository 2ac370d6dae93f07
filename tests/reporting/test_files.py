"""Report folders on disk: normal modes, nothing replaced that is not a report, one writer at a
time, and the previous report intact after a write that fails midway (a full disk)."""

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from estimator_lab.reporting import atomic_write_bytes, atomic_write_text, staged_directory
from estimator_lab.reporting.files import (
    OutputFolderBusy,
    check_output_folder,
    claim_output_folder,
)
from estimator_lab.reporting.manifest import run_identity, run_manifest
from estimator_lab.studies.bias import BiasConfig, run_bias


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it (`umask(0o027)`)."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def write_report(folder, text="old"):
    """A small report folder written through `staged_directory`."""
    with staged_directory(folder) as stage:
        atomic_write_text(stage / "manifest.json", json.dumps({"text": text}))
        atomic_write_text(stage / "report.md", f"# {text}\n")
        (stage / "results.csv").write_text(f"value\n{text}\n")


def snapshot(folder):
    """Every file's bytes and mode, and the folder's mode."""
    return mode(folder), {p.name: (p.read_bytes(), mode(p)) for p in folder.iterdir()}


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_new_files_and_folders_get_the_modes_open_and_mkdir_give(tmp_path, umask, mask):
    """Regression (issue #22 defect 8, #20 item 4): files were 0600 and folders 0700 (mkstemp,
    mkdtemp) whatever the umask; now 0666 and 0777 less the umask, like `open` and `mkdir`."""
    umask(mask)
    write_report(tmp_path / "report")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    (tmp_path / "plain").mkdir()
    assert mode(tmp_path / "report") == mode(tmp_path / "plain") == 0o777 & ~mask
    assert {mode(p) for p in (tmp_path / "report").iterdir()} == {0o666 & ~mask}
    assert mode(atomic_write_bytes(tmp_path / "single.bin", b"1")) == mode(plain)


def test_a_replaced_folder_and_file_keep_their_modes(tmp_path, umask):
    """Regression (issue #22 defect 8): replacing a folder gave it 0700 and a file 0600."""
    write_report(tmp_path / "report")
    os.chmod(tmp_path / "report", 0o750)
    os.chmod(tmp_path / "report" / "report.md", 0o640)
    atomic_write_text(tmp_path / "report" / "report.md", "# edited\n")
    assert mode(tmp_path / "report" / "report.md") == 0o640
    write_report(tmp_path / "report", "new")
    assert mode(tmp_path / "report") == 0o750
    assert (tmp_path / "report" / "report.md").read_text() == "# new\n"


def test_an_existing_file_is_never_replaced_by_a_report_folder(tmp_path):
    """Regression (issue #22 defect 2): `--out F` on a file F deleted it and wrote a folder."""
    target = tmp_path / "F"
    target.write_text("x\n")
    with pytest.raises(ValueError, match="is an existing file, not a folder") as error:
        write_report(target)
    assert "\n" not in str(error.value)
    assert target.read_text() == "x\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["F"]  # no staging folder, no lock


def test_a_folder_that_is_not_a_report_is_never_replaced(tmp_path):
    """An existing folder with files but no manifest.json (say `--out ~`) is refused; an empty
    folder or an earlier report is replaced."""
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("keep")
    with pytest.raises(ValueError, match="holds files but no manifest.json"):
        check_output_folder(tmp_path / "thesis")
    with pytest.raises(ValueError, match="holds files but no manifest.json"):
        write_report(tmp_path / "thesis")
    assert (tmp_path / "thesis" / "chapter1.tex").read_text() == "keep"
    (tmp_path / "empty").mkdir()
    write_report(tmp_path / "empty")
    write_report(tmp_path / "empty", "again")
    assert (tmp_path / "empty" / "report.md").read_text() == "# again\n"


def test_a_folder_below_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "F").write_text("x")
    with pytest.raises(ValueError, match=r"cannot be made: .*F is a file"):
        check_output_folder(tmp_path / "F" / "sub" / "report")


HOLDER = textwrap.dedent("""
    import sys
    from estimator_lab.reporting.files import claim_output_folder
    with claim_output_folder(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()
""")


@pytest.fixture
def holder(tmp_path):
    """Starts another process that claims `tmp_path / "report"` until its stdin gets a line."""
    processes = []

    def start():
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "report")],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline() == "held\n"
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path, holder):
    """Regression (issue #22 defect 3): two writers of one folder both succeeded, and the
    first one's results were replaced by the second's. The refusal names the holder."""
    write_report(tmp_path / "report", "first run's")
    before = snapshot(tmp_path / "report")
    process = holder()
    with pytest.raises(OutputFolderBusy) as error:
        write_report(tmp_path / "report", "second run's")
    message = str(error.value)
    holder_identity = f"(pid {process.pid} on {socket.gethostname()}"
    assert f"is being written by another run {holder_identity}" in message
    assert "\n" not in message and isinstance(error.value, ValueError)
    assert snapshot(tmp_path / "report") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.lock", "report"]
    process.communicate("done\n")  # the holder releases the lock and removes its file
    assert process.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    write_report(tmp_path / "report", "second run's")
    assert (tmp_path / "report" / "report.md").read_text() == "# second run's\n"


def test_a_killed_writer_leaves_no_stale_lock(tmp_path, holder):
    process = holder()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / ".report.lock").exists()  # its file stays, but the kernel freed the lock
    write_report(tmp_path / "report", "next run's")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_claims_of_one_process_nest(tmp_path):
    """A command claims its folder before the long work; its staged write claims it again."""
    with claim_output_folder(tmp_path / "report") as folder:
        assert folder == tmp_path / "report"
        write_report(tmp_path / "report")
        lock = json.loads((tmp_path / ".report.lock").read_text())
        assert {k: lock[k] for k in ("host", "pid")} == run_identity()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_the_manifest_names_the_run_that_wrote_it():
    """Regression (issue #22 defect 3): nothing said which run wrote a report folder."""
    manifest = run_manifest(seed=0, device="cpu", wall_time_s=0.0)
    assert manifest["run"] == {"host": socket.gethostname(), "pid": os.getpid()}


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk(n)`: the `n`-th file written through `os.fdopen` from now on (every
    `atomic_write_*`) gets half its bytes and then fails with ENOSPC, as on a full disk."""

    def arm(nth):
        real_fdopen, count = os.fdopen, [0]

        class FullDiskFile:
            def __init__(self, handle):
                self.handle = handle
                count[0] += 1
                self.fails = count[0] == nth

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                self.handle.__enter__()
                return self

            def __exit__(self, *exc):
                return self.handle.__exit__(*exc)

            def write(self, data):
                if self.fails:
                    self.handle.write(data[: len(data) // 2])
                    self.handle.flush()
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return self.handle.write(data)

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: FullDiskFile(real_fdopen(*a, **k)))
        return count

    return arm


@pytest.mark.parametrize("nth", [1, 2])
def test_a_write_that_fails_midway_leaves_the_previous_report_intact(tmp_path, full_disk, nth):
    """Fault battery (issue #22): a full disk at the `nth` atomic write of a new report."""
    write_report(tmp_path / "report")
    before = snapshot(tmp_path / "report")
    full_disk(nth)
    with pytest.raises(OSError) as error:
        write_report(tmp_path / "report", "new")
    assert error.value.errno == errno.ENOSPC
    assert snapshot(tmp_path / "report") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging debris


@pytest.fixture(scope="module")
def bias_config():
    return BiasConfig(graph="toy:n=3", draws=50, seed=1, device="cpu")


@pytest.mark.parametrize("nth", [1, 3, 6])  # bias.png, tables.tex, report.md (the last)
def test_a_study_that_hits_a_full_disk_leaves_its_previous_report_intact(
        tmp_path, full_disk, bias_config, nth):
    """Fault battery (issue #22): a bias study whose report write fails at its `nth` file."""
    run_bias(bias_config, tmp_path / "report")
    before = snapshot(tmp_path / "report")
    count = full_disk(nth)
    with pytest.raises(OSError) as error:
        run_bias(BiasConfig(graph="toy:n=3", draws=60, seed=2, device="cpu"), tmp_path / "report")
    assert error.value.errno == errno.ENOSPC and count[0] == nth
    assert snapshot(tmp_path / "report") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_failed_swap_puts_the_previous_report_back(tmp_path, monkeypatch):
    """Regression: if renaming the staging folder into place failed, the previous report was
    left moved aside in a hidden folder and the report folder was gone."""
    write_report(tmp_path / "report")
    before = snapshot(tmp_path / "report")
    real_replace = os.replace

    def replace(source, target):  # fails for the staging folder only, not the files inside
        if os.path.basename(source).startswith(".report.staging-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        write_report(tmp_path / "report", "new")
    assert snapshot(tmp_path / "report") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
