"""The fault-injection harness (tools/chaos/, run as `python3 tools/chaos`), short: every fault, two runs each.

Each run is the real central and real Go agencies (the network cut under Docker Compose, project
`lottery-chaos`; the full disk on a tmpfs, which needs root) with a fault in the middle of it;
the harness checks every bet stored exactly once, no invalid row stored, every agency exit 0 and
exact winners, and prints one table. Docker is required, as for tests/docker.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import ROOT, wait_until

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


def processes_of(work: Path) -> list[int]:
    """Pids whose command line or environment names `work` (the harness's agencies and centrals)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(work).encode() in (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile, or not ours to read
    return found


def test_sigterm_mid_run_unwinds_and_exits_130() -> None:
    """The handler only records SIGTERM; the run's waits unwind through their finally blocks: the
    central and the agencies killed, the tmpfs unmounted, exit code 130."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "chaos"), "--faults", "disk_full", "--runs", "3",
                             "--rows", "20000", "--seed", "7"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        first = wait_until(lambda: lines[:1], 120, "the harness's first line")[0]
        found = re.search(r"work dir (\S+)", first)
        assert found, first
        work = Path(found.group(1))
        run_dir = work / "disk_full-1"
        log = run_dir / "central.log"
        wait_until(lambda: log.exists() and "action: listen" in log.read_text(), 120, "the first run's central")
        assert f"{run_dir}/tmpfs tmpfs" in Path("/proc/mounts").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130, "".join(lines)[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    out = "".join(lines)
    assert "chaos: error, stopped before the end: interrupted" in out, out[-4000:]
    assert f"{run_dir}/tmpfs" not in Path("/proc/mounts").read_text(), "the tmpfs is still mounted"
    assert processes_of(work) == [], f"processes of {work} still running:\n{out[-4000:]}"
    shutil.rmtree(work)  # kept by the interrupted harness
