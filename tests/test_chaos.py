"""The fault-injection harness (tools/chaos/, run as `python3 tools/chaos`), short: every fault, two runs each.

Each run is the real central and real Go agencies (the network cut under Docker Compose, project
`lottery-chaos`; the full disk on a tmpfs, which needs root) with a fault in the middle of it;
the harness checks every bet stored exactly once, no invalid row stored, every agency exit 0 and
exact winners, and prints one table. Docker is required, as for tests/docker.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from conftest import ROOT

FAULTS = ("central_kill", "agency_kill", "network_cut", "disk_full", "central_restart")
TIMEOUT = 900  # measured: about 2 minutes (image build cached)


def run_chaos(*args: str) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "chaos"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the harness unwinds: processes killed, tmpfs unmounted, compose down
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"tools/chaos did not finish within {TIMEOUT} s:\n{out[-6000:]}") from None
    return proc.returncode, out


def test_every_fault_twice_loses_and_duplicates_no_bet() -> None:
    code, out = run_chaos("--runs", "2")
    assert code == 0, out[-8000:]
    for fault in FAULTS:
        row = re.search(rf"^{fault}\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", out, re.M)
        assert row, f"no table row for {fault}:\n{out[-4000:]}"
        runs, expected, stored, lost, duplicated = map(int, row.groups())
        assert runs >= 2 and expected > 0, row.group(0)
        assert (lost, duplicated) == (0, 0) and stored == expected, row.group(0)
