#!/usr/bin/env python3
"""`make docker-compose-up`'s last step: start the compose project, and when the central does not
come up, say why where the user looks, with the remedy, and exit non-zero.

    python3 tools/compose_up.py docker compose -f docker-compose-dev.yaml [-p PROJECT]

It runs `<compose command> up -d`. The agencies wait for the central's health check, so when the
central refuses to start (another AGENCIES on a kept round, its storage in use, a bad
configuration, bad credentials) `up` fails with only "container server is unhealthy" or "exited";
this prints the central's own `result: fail` lines from its log instead, then what to do. The
standard library only: it runs before any virtual environment is needed.
"""

from __future__ import annotations

import re
import subprocess
import sys

UP_TIMEOUT = 300  # seconds for `up -d`: image pulls are done by then (make docker-image ran first)
FAIL_LINE = re.compile(r"action: (\w+) \| result: fail\b.*")

REMEDIES = {
    "storage_round": "the storage volume holds a finished or open round for another number of agencies: "
    "start a new round with `make docker-compose-reset` (it deletes the stored round), or go back to that "
    "number with `python compose_maker.py N`",
    "storage_lock": "another central uses the same storage: stop it first (`make docker-compose-down`)",
    "config": "fix the key the line names (server/config.ini, or the environment in the compose file); for TLS "
    "files, run `make secrets`",
}


def central_failures(compose: list[str]) -> list[str]:
    """The central's `result: fail` lines, oldest first, without repeats (a restarted central
    says the same thing each time)."""
    logs = subprocess.run([*compose, "logs", "--no-color", "--no-log-prefix", "server"], capture_output=True,
                          text=True, timeout=60)
    seen: dict[str, None] = {}
    for line in logs.stdout.splitlines():
        found = FAIL_LINE.search(line)
        if found:
            seen.setdefault(found.group(0), None)
    return list(seen)


def main(argv: list[str]) -> int:
    compose = argv[1:]
    if not compose:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    up = subprocess.run([*compose, "up", "-d"], timeout=UP_TIMEOUT)
    if up.returncode == 0:
        return 0
    failures = central_failures(compose)
    print("\nmake docker-compose-up: the central did not start.", file=sys.stderr)
    if not failures:
        print("It logged no refusal; see `make docker-compose-logs`.", file=sys.stderr)
        return 1
    print("Its log says:", file=sys.stderr)
    for line in failures:
        print(f"  {line}", file=sys.stderr)
    actions = [FAIL_LINE.search(line).group(1) for line in failures]  # type: ignore[union-attr]
    for action in dict.fromkeys(actions):
        remedy = REMEDIES.get(action)
        if remedy:
            print(f"Remedy: {remedy}.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
