"""Fault-injection harness: the real central and real Go agencies under faults (owns tools/chaos/).

    python3 tools/chaos                                      # every fault, 20 runs each
    python3 tools/chaos --runs 2                             # the short run tests/test_chaos.py makes
    python3 tools/chaos --runs 5 --faults central_kill,agency_kill --seed 1234
    make chaos                                               # 20 runs per fault (CHAOS_ARGS=... adds options)

(`python3 -m chaos` with tools/ on sys.path is the same.) For each fault it makes N runs, each
with its own random timings drawn from a seed derived from --seed (printed at the start: the same
--seed, fault and run number replay the same data and timings). Every run starts from an empty
storage with fresh data written here: 3 agencies (4 under Docker, with twice the rows), each a CSV
file of a few thousand bets from tools/gen_data.py plus rows whose names hold commas, double
quotes, semicolons and apostrophes (RFC 4180 quoting, written with Python's csv module) and a few
invalid rows (impossible dates, a non-numeric document, a missing field, ...) that must never be
stored. Agencies use small batches and windows (batch.maxAmount 10-50, window 2-4) and retry
settings that outlast every fault (100 attempts, 50 ms to 1 s backoff, 2 s I/O timeout). The
fault fires when a random 10-75 % of the bets are in bets.csv, so it lands mid-run whatever the
machine's speed.

Faults (what each needs: processes, docker, a tmpfs that root mounts):
  central_kill     SIGKILL the central (the supervisor, frozen first, and every worker, found as
                   its children in /proc), start it again on the same port and storage after a
                   random short delay.
  agency_kill      SIGKILL a random running agency, start it again on the same file, half of the
                   time with another batch.maxAmount (protocol v2: it resumes after what is stored).
  network_cut      under Docker Compose (project `lottery-chaos`, docker-compose-chaos.yaml at the
                   repo root, made by compose_maker.py and tweaked): disconnect a running agency's
                   container from the network for 1-3 s, then connect it again with its own
                   address (the network gets a free /24 so that it can: a cut, not a new address).
                   Images: `make docker-image` once, its images tagged lottery-chaos/server and
                   lottery-chaos/client at once so that another checkout's build cannot swap them.
                   Fails (exit 2) if containers named server/clientN belong to another project.
  disk_full        STORAGE_DIR on an 8 MiB tmpfs mounted here (root needed); a filler file takes
                   every free byte for 1-2 s, then is deleted: the central refuses with
                   INTERNAL_ERROR meanwhile and the run must finish by itself.
  central_restart  SIGTERM the central (it must exit 0), start it again after a short delay.

After each run it parses bets.csv with the csv module and checks that every valid row of every
agency file is stored exactly once (as a multiset of its five fields per agency), that no
invalid row is stored, that every agency exits 0 and that each agency's
`action: consulta_ganadores | result: success | cant_ganadores: N` equals its valid rows with
number 7574. A row's validity is the central's own rule (server/lottery). It prints one line per
run, then one table: fault | runs | bets expected | bets stored | lost | duplicated | slowest
recovery (s), the recovery being the time from the end of the fault (restart issued, network
reconnected, room restored) to the exit of the last agency. Exit code 0 only if every run was
correct; otherwise 1, with what was wrong in which run and the kept directory holding that run's
logs, data, bets.csv and result.txt; 2 if the harness could not go on (no Docker, no root for the
tmpfs, a build failed, the container names taken); 130 if interrupted (SIGTERM, Ctrl-C).

Every wait has a deadline; processes are killed, the tmpfs unmounted and the compose project
taken down in `finally` blocks. Signal handlers only record; the waits unwind (common.py).

Jepsen style, kept apart: workload.py (the data), faults.py (the nemesis: one registry of faults
and what each needs), checker.py (the verdict), local.py and compose.py (the drivers: the system
as processes, or under Docker Compose), report.py (the lines and the table), cli.py (main).
"""

import sys
from pathlib import Path

# The harness imports tools/ modules (gen_data, processes) and the server's lottery package.
for _path in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2] / "server"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
