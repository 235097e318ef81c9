"""`make docker-compose-up` when the central refuses to start: the refusal and its remedy are
printed where the user looks, and the command fails (tools/compose_up.py, under the real Compose)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT
from test_docker import COMPOSE_FILE, PROJECT, Compose, compose, images  # noqa: F401  (fixtures)


def compose_up(project: Compose) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "tools/compose_up.py", "docker", "compose", "-p", PROJECT, "-f",
                           str(COMPOSE_FILE)], cwd=ROOT, capture_output=True, text=True, timeout=400)


def test_a_kept_round_for_other_agencies_is_refused_with_its_remedy(compose) -> None:
    first = compose(2)
    started = compose_up(first)
    assert started.returncode == 0, started.stdout + started.stderr
    for client in first.clients:
        assert first.wait_exit(client) == 0
    first("stop", "-t", "10", timeout=60)  # the storage volume stays: a kept round for 2 agencies
    second = Compose(3)  # the same project and volume, for 3 agencies
    refused = compose_up(second)
    assert refused.returncode != 0
    assert "make docker-compose-up: the central did not start." in refused.stderr
    assert "action: storage_round | result: fail | storage: /storage | round_agencies: 2 | agencies: 3" in refused.stderr
    assert "Remedy: the storage volume holds" in refused.stderr and "make docker-compose-reset" in refused.stderr
