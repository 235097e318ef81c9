"""tools/bench.py --sweep: the benchmark over several numbers of agencies, ending with a table and
a Mermaid chart (the ones docs/benchmarks.md shows), each run checked for exact winners."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

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


def test_side_by_side_alternates_the_two_checkouts_and_prints_the_table() -> None:
    """--vs against this very checkout: the mechanics (both sides built, alternating, checked runs,
    per-side medians, pairwise ratios, the Markdown table), whatever the figures."""
    result = subprocess.run([sys.executable, "tools/bench.py", "--vs", str(ROOT), "--runs", "2", "--agencies", "2",
                             "--bets", "2000"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    sides = re.findall(r"^run (\d): side: (this|other) \| bets: 2000 \| agencies: 2 ", result.stdout, re.MULTILINE)
    assert sides == [("1", "this"), ("1", "other"), ("2", "this"), ("2", "other")], result.stdout
    assert len(re.findall(r"^median \(range\) of 2 runs, side: (this|other): wall_seconds: ", result.stdout,
                          re.MULTILINE)) == 2
    ratios = dict(re.findall(r"(\w+): ([0-9.]+)", re.search(r"^ratio this/other, median of 2 pairs: (.*)$",
                                                             result.stdout, re.MULTILINE).group(1)))
    assert set(ratios) >= {"wall_seconds", "server_cpu_seconds", "agencies_cpu_seconds", "server_peak_pss_mib"}
    assert all(float(value) > 0 for value in ratios.values())
    rows = re.findall(r"^\| (wall \(s\)|server CPU \(s\)|server memory, peak of summed PSS \(MiB\)) \| .+ \| .+ \| "
                      r"([0-9.]+) \|$", result.stdout, re.MULTILINE)
    assert [name for name, _ in rows] == ["wall (s)", "server CPU (s)", "server memory, peak of summed PSS (MiB)"]


def test_side_by_side_refuses_what_it_cannot_compare(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for args in (["--vs", str(tmp_path)], ["--vs", str(ROOT), "--sweep", "1,2"]):
        result = subprocess.run([sys.executable, "tools/bench.py", *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2 and "--vs" in result.stderr, result.stderr


def test_a_profiled_run_reports_the_centrals_functions_by_cpu_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run([sys.executable, "tools/bench.py", "--agencies", "2", "--bets", "60000", "--profile",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^profile .*: 3 processes \(1 supervisor, 2 workers\)", result.stdout, re.MULTILINE), \
        result.stdout
    assert "'fullmatch' of 're.Pattern'" in result.stdout  # the pattern that validates each batch
    assert sorted(path.name.split("-")[0] for path in tmp_path.rglob("*.prof")) == ["supervisor", "worker", "worker"]


def test_a_sides_agencies_run_with_what_its_image_sets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """bench_run.dockerfile_env: the final stage's ENV lines (the build stage's do not reach the
    image), and the project's agency image sets GOMAXPROCS=1."""
    from bench_run import BenchError, dockerfile_env

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM golang AS build\nENV CGO_ENABLED=0 GOFLAGS=-mod=vendor\n# it's a comment\n"
                          "FROM scratch\nENV GOMAXPROCS=1 NAME=\"two words\"\nENTRYPOINT [\"/client\"]\n")
    assert dockerfile_env(dockerfile) == {"GOMAXPROCS": "1", "NAME": "two words"}
    dockerfile.write_text("FROM scratch\nENV GOMAXPROCS 1\n")
    with pytest.raises(BenchError, match="KEY=VALUE"):
        dockerfile_env(dockerfile)
    assert dockerfile_env(ROOT / "client" / "Dockerfile") == {"GOMAXPROCS": "1"}


def test_a_floor_run_follows_each_run_and_is_set_against_it() -> None:
    """--floor: after each checked run, as many bare agencies against a bare central, each exiting 0
    only once its handshake was verified and its byte echoed; then their medians and the ratios."""
    result = subprocess.run([sys.executable, "tools/bench.py", "--agencies", "3", "--bets", "3000", "--floor",
                             "--runs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = re.findall(r"^(run|floor) (\d): (?:bets: 3000 \| )?agencies: 3 \| wall_seconds: ([0-9.]+) ", result.stdout,
                       re.MULTILINE)
    assert [(kind, run) for kind, run, _ in lines] == [("run", "1"), ("floor", "1"), ("run", "2"), ("floor", "2")], \
        result.stdout
    assert all(float(wall) > 0 for _, _, wall in lines)
    ratios = dict(re.findall(r"(\w+): ([0-9.]+)", re.search(r"^ratio floor/this, median of 2 runs: (.*)$",
                                                             result.stdout, re.MULTILINE).group(1)))
    assert set(ratios) == {"wall_seconds", "server_cpu_seconds", "agencies_cpu_seconds"}
    assert all(float(value) > 0 for value in ratios.values())


def test_a_per_bet_floor_run_stores_every_bet_and_is_set_against_the_run() -> None:
    """--floor-bets: after each checked run, the same agencies against the bare per-bet central,
    every agency exiting 0 and every bet stored once (the line's `bets:` is the count of lines it
    stored, checked against the data set); then their medians and the ratios."""
    result = subprocess.run([sys.executable, "tools/bench.py", "--agencies", "3", "--bets", "3000", "--floor-bets",
                             "--runs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = re.findall(r"^(run|floor-bets) (\d): (?:bets: 3000 \| )?agencies: 3 \| (?:bets: 3000 \| )?"
                       r"wall_seconds: ([0-9.]+) ", result.stdout, re.MULTILINE)
    assert [(kind, run) for kind, run, _ in lines] == [("run", "1"), ("floor-bets", "1"), ("run", "2"),
                                                        ("floor-bets", "2")], result.stdout
    assert all(float(wall) > 0 for _, _, wall in lines)
    ratios = dict(re.findall(r"(\w+): ([0-9.]+)", re.search(r"^ratio floor-bets/this, median of 2 runs: (.*)$",
                                                             result.stdout, re.MULTILINE).group(1)))
    assert set(ratios) == {"wall_seconds", "server_cpu_seconds", "agencies_cpu_seconds"}
    assert all(float(value) > 0 for value in ratios.values())


def test_the_bare_central_checks_identity_as_the_central_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A floor that skipped the central's identity check would be below the real floor: the bare
    central of a round of one agency echoes agency-1 and refuses agency-2, whose certificate the
    same CA signed."""
    from bench_floor import READY, build_floor
    from bench_launch import Launch, spawn_all, wait_all
    from bench_run import build_side
    from processes import free_port

    bare = build_floor(build_side("this", ROOT, tmp_path, 2))
    port = free_port()
    central = subprocess.Popen([sys.executable, "tools/bench_floor.py", "--port", str(port), "--workers", "1",
                                "--agencies", "1", "--secrets", str(bare.secrets), "--server-dir",
                                str(bare.server_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert central.stdout is not None and central.stdout.readline().strip() == READY
        env = {"CLI_SERVER_ADDRESS": f"127.0.0.1:{port}", "CLI_TLS_CA": str(bare.secrets / "ca.pem"),
               "CLI_TLS_SERVERNAME": "localhost", **bare.image_env}
        launches = [Launch([str(bare.binary)], {**env, "CLI_TLS_CERT": str(bare.secrets / f"agency-{a}.pem"),
                                                "CLI_TLS_KEY": str(bare.secrets / f"agency-{a}-key.pem")},
                           tmp_path / f"bare-{a}.log") for a in (1, 2)]
        exits = wait_all(spawn_all(launches), 60)
    finally:
        central.terminate()
        central.wait(10)
    assert exits.codes == [0, 1], [launch.log.read_text() for launch in launches]
    assert launches[1].log.read_text().startswith("floor: ")
