"""The manifest's peak memory: the resident high-water mark of the process that writes it."""

import json
import os
import subprocess
import sys

import pytest

from estimator_lab.reporting.manifest import run_manifest

_GROW = """
import json, os
from estimator_lab.reporting.manifest import peak_memory_mib
def resident_mib():  # the resident set now (Linux), not its high-water mark
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
now = resident_mib()
block = b"\\\\x01" * (300 * 2**20)  # written, so every page is resident
grown = peak_memory_mib()["rss"]
del block
print(json.dumps([now, grown, peak_memory_mib()["rss"]]))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc (Linux)")
def test_peak_memory_covers_what_the_process_touched_and_does_not_fall():
    now, grown, freed = json.loads(subprocess.run(
        [sys.executable, "-c", _GROW], capture_output=True, text=True, check=True).stdout)
    assert grown >= now + 299  # the 300 MiB block on top of what was resident before it
    assert freed == grown  # a high-water mark: freeing the block does not lower it


def test_the_manifest_records_peak_memory_without_cuda_on_a_cpu_run():
    manifest = run_manifest(seed=0, device="cpu", wall_time_s=0.0)
    assert set(manifest["peak_memory_mib"]) == {"rss"} and manifest["peak_memory_mib"]["rss"] > 0
