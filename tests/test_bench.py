"""tools/bench.py --sweep: the benchmark over several numbers of agencies, ending with a table and
a Mermaid chart (the ones docs/benchmarks.md shows), each run checked for exact winners."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_a_sweep_prints_one_row_per_count_and_the_chart() -> None:
    result = subprocess.run([sys.executable, "tools/bench.py", "--sweep", "1,3", "--bets", "3000"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^\| ([0-9,]+) \| ([0-9,]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| ([0-9.]+) \|$", result.stdout,
                      re.MULTILINE)
    assert [row[0] for row in rows] == ["1", "3"], result.stdout
    assert all(int(row[1].replace(",", "")) > 0 and float(row[2]) > 0 for row in rows)
    assert re.search(r"```mermaid\nxychart-beta\n.*\n    x-axis \[1, 3\]\n.*\n    bar \[\d+, \d+\]\n```", result.stdout)
    assert len(re.findall(r"^run 1: bets: 3000 \| agencies: [13] ", result.stdout, re.MULTILINE)) == 2


def test_the_central_micro_benchmark_measures_each_stage_of_a_bet() -> None:
    result = subprocess.run([sys.executable, "tools/bench_central.py", "--bets", "2000", "--repeat", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    stages = re.findall(r"^  (decode and validate|store \(.*\)|handle \(.*\)): (\d+\.\d+)$", result.stdout,
                        re.MULTILINE)
    assert [name.split(" ")[0] for name, _ in stages] == ["decode", "store", "handle"], result.stdout
    assert all(float(value) > 0 for _, value in stages)
