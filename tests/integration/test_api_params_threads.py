"""Query parsing survives many threads parsing the same endpoint's query for the first time.

msgspec builds a Struct's decoding info lazily and publishes it before it is complete; threads
racing on that first use crashed `flightpipe serve` with SIGSEGV (see flightpipe_api.params). Each
run is a fresh interpreter (the info is per process) with a tiny GIL switch interval, so threads
interleave inside the build. Without the fix 3 of these 40 runs died of SIGSEGV (and 5 of 60 in
a first reproduction), so the test misses the bug only a few percent of the time.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from flightpipe_api import params

RACE = """
import sys, threading
sys.setswitchinterval(1e-6)
import msgspec
from flightpipe_api import params
for cls in params.QUERIES:
    # A field present in the input: the decoding info of its type is read (the crash site).
    given = {"limit": 5000} if "limit" in cls.__struct_fields__ else {}
    given |= {"format": "csv"} if "format" in cls.__struct_fields__ else {}
    barrier = threading.Barrier(8)
    def first_use():
        barrier.wait()
        msgspec.convert(given, cls)
    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
"""
RUNS = 40


def test_every_endpoint_query_is_in_the_warmed_list() -> None:
    queries = {
        cls
        for cls in vars(params).values()
        if isinstance(cls, type) and cls.__name__.endswith("Query")
    }
    assert queries == set(params.QUERIES)


@pytest.mark.timeout(300)
def test_first_concurrent_parses_of_every_query_do_not_crash_the_process() -> None:
    crashed = []
    for run in range(RUNS):
        proc = subprocess.run(
            [sys.executable, "-c", RACE], capture_output=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            crashed.append((run, proc.returncode, proc.stderr.decode()[-500:]))
    assert not crashed, crashed
