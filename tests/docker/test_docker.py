"""End to end under Docker Compose: the real images, the compose file compose_maker.py writes, nc_test.sh.

Docker is required: without an engine these tests fail (they are never skipped). Base images come
from PYTHON_IMAGE / GO_IMAGE / NETCAT_IMAGE as `make docker-image` and nc_test.sh read them.
The compose project is `lottery-test` (its own network and storage volume); the container names
are the ones compose_maker.py gives (server, client1, ...), so a `make docker-compose-up` of
your own must be down while these run.

Credentials: compose_maker.py issues them (client/cmd/certs) into a temporary directory of the
session, SECRETS, which the compose file hands out as Compose secrets; a user's .secrets/ is
never touched. The hand-made agency (raw_peer.py) gets agency 3's pair, and agency 4's for a
certificate outside its round, mounted read-only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import DEFAULT_WINNERS, ROOT

PROJECT = "lottery-test"
COMPOSE_FILE = ROOT / "docker-compose-test.yaml"
SECRETS = Path(tempfile.mkdtemp(prefix="lottery-docker-secrets-"))
atexit.register(shutil.rmtree, SECRETS, True)  # also when the Docker tests are deselected or fail early
# The images under test, built from this tree with their own tags: another checkout's
# `make docker-image` (server:latest, client:latest) cannot swap them during a run.
IMAGES = {"server": "lottery-test/server:latest", "client": "lottery-test/client:latest"}
RAW_PEER_CREDENTIALS = ["ca.pem", "agency-3.pem", "agency-3-key.pem", "agency-4.pem", "agency-4-key.pem"]


def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def images() -> None:
    if run("docker", "info", check=False, timeout=30).returncode != 0:
        pytest.fail("Docker is not available: start an engine (source ../shared/ci/docker-env.sh)")
    run("make", "docker-image", f"SERVER_IMAGE={IMAGES['server']}", f"CLIENT_IMAGE={IMAGES['client']}", timeout=900)


def issue(agencies: int, directory: Path = SECRETS, **env: str) -> subprocess.CompletedProcess[str]:
    """compose_maker.py --secrets-only N: the missing credentials of agencies 1..N."""
    result = subprocess.run([sys.executable, "compose_maker.py", "--secrets-only", str(agencies), "--secrets-dir",
                             str(directory)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


class Compose:
    """One compose project made by compose_maker.py, optionally tweaked, and helpers to watch it."""

    def __init__(self, agencies: int, tweak: Callable[[dict], None] | None = None) -> None:
        run("python3", "compose_maker.py", str(agencies), "--output", str(COMPOSE_FILE),
            "--secrets-dir", str(SECRETS), timeout=600)  # issues what SECRETS lacks
        spec = yaml.safe_load(COMPOSE_FILE.read_text())
        for name, service in spec["services"].items():
            service["image"] = IMAGES["server" if name == "server" else "client"]
        if tweak:
            tweak(spec)
        COMPOSE_FILE.write_text(yaml.safe_dump(spec, sort_keys=False))
        self.agencies = agencies
        self.clients = [f"client{i}" for i in range(1, agencies + 1)]
        self.network = f"{PROJECT}_lottery_net"

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run("docker", "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args, timeout=timeout)

    def state(self, container: str) -> tuple[bool, int]:
        out = run("docker", "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", container).stdout.split()
        return out[0] == "true", int(out[1])

    def wait_exit(self, container: str, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running, code = self.state(container)
            if not running:
                return code
            time.sleep(0.5)
        raise AssertionError(f"{container} still running after {timeout}s:\n{self.logs(container)[-3000:]}")

    def logs(self, container: str) -> str:
        result = run("docker", "logs", container, check=False)
        return result.stdout + result.stderr

    def wait_log(self, container: str, pattern: str, count: int = 1, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.logs(container))) >= count:
                return
            time.sleep(0.3)
        raise AssertionError(f"{container}: no {pattern!r} after {timeout}s:\n{self.logs(container)[-3000:]}")

    def health(self, container: str = "server") -> str:
        return run("docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                   container).stdout.strip()

    def started_at(self, container: str) -> datetime:
        stamp = run("docker", "inspect", "-f", "{{.State.StartedAt}}", container).stdout.strip()
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00"))

    def secret_mounts(self, container: str) -> dict[str, str]:
        """{path in the container: host file} of the container's read-only mounts in /run/secrets."""
        fmt = "{{range .Mounts}}{{.Destination}} {{.Source}} {{.RW}}\n{{end}}"
        mounts = {}
        for line in run("docker", "inspect", "-f", fmt, container).stdout.splitlines():
            if line.startswith("/run/secrets/"):
                destination, source, rw = line.split()
                assert rw == "false", line
                mounts[destination] = source
        return mounts

    def raw_peer(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """raw_peer.py in a container on the compose network: TLS to the agencies' port with
        agency 3's credentials (and agency 4's), mounted read-only."""
        image = os.environ.get("PYTHON_IMAGE", "python:3.11-slim")
        credentials = [arg for name in RAW_PEER_CREDENTIALS for arg in ("-v", f"{SECRETS / name}:/tls/{name}:ro")]
        return run("docker", "run", "--rm", "--network", self.network, *credentials,
                   "-v", f"{ROOT / 'server'}:/server:ro", "-v", f"{ROOT / 'tests' / 'docker'}:/peer:ro",
                   image, "python3", "/peer/raw_peer.py", "server", "12345", *args, timeout=timeout, check=False)

    def down(self) -> None:
        self("down", "-v", "--remove-orphans", "-t", "2", timeout=180)


@pytest.fixture
def compose(images) -> Iterator[Callable[..., Compose]]:
    made: list[Compose] = []

    def make(agencies: int, tweak: Callable[[dict], None] | None = None) -> Compose:
        project = Compose(agencies, tweak)
        project.down()  # a leftover of an interrupted run
        made.append(project)
        return project

    yield make
    for project in made:
        project.down()
    COMPOSE_FILE.unlink(missing_ok=True)
    COMPOSE_FILE.with_suffix(".stack.yaml").unlink(missing_ok=True)  # compose_maker.py writes it too


def slow_clients(spec: dict) -> None:
    """Small batches, one in flight: a run long enough to interrupt."""
    for name, service in spec["services"].items():
        if name.startswith("client"):
            service["environment"] += ["CLI_BATCH_MAXAMOUNT=5", "CLI_BATCH_WINDOW=1"]


def shutdown_logged(log: str) -> bool:
    return log.rstrip().endswith("action: exit | result: success")


def nc_test() -> subprocess.CompletedProcess[str]:
    return run("bash", "nc_test.sh", check=False, timeout=60)


def check_hardened(project: Compose) -> None:
    """The CIS Docker Benchmark settings compose_maker.py writes, on the containers as they ran:
    a non-root user, a read-only root filesystem with the storage volume as the only writable
    place, no capability, no new privileges, memory and pids limits; each key readable on the host
    by its owner and its container's uid only (a POSIX ACL: docs/swarm.md)."""
    for container in ["server", *project.clients]:
        info = json.loads(run("docker", "inspect", container).stdout)[0]
        central = container == "server"
        host = info["HostConfig"]
        assert info["Config"]["User"] == ("10001:10001" if central else "10002:10002"), container
        assert host["ReadonlyRootfs"] is True, container
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], container
        assert host["SecurityOpt"] == ["no-new-privileges:true"], container
        assert host["Memory"] == (256 if central else 64) * 2**20, container
        assert host["PidsLimit"] == (256 if central else 64), container
        assert host["Privileged"] is False, container
        writable = [mount["Destination"] for mount in info["Mounts"] if mount["RW"]]
        assert writable == (["/storage"] if central else []), (container, info["Mounts"])
    assert run("docker", "inspect", "-f", "{{json .HostConfig.RestartPolicy}}", "server").stdout.strip() == (
        '{"Name":"on-failure","MaximumRetryCount":5}')
    # The running central: no capability at all, no_new_privs set, its user, the storage its own.
    pid = run("docker", "inspect", "-f", "{{.State.Pid}}", "server").stdout.strip()
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["Uid"].split()[:2] == ["10001", "10001"]
    owner = run("docker", "exec", "server", "python3", "-c",
                "import os; s = os.stat('/storage/bets.csv'); print(s.st_uid, s.st_gid)").stdout.split()
    assert owner == ["10001", "10001"]
    refused = run("docker", "exec", "server", "python3", "-c", "open('/app/x', 'w')", check=False)
    assert refused.returncode == 1 and "Read-only file system" in refused.stderr, refused
    # On the host the keys stay 0600 but for one named uid, the container's user.
    for name, uid in [("server-key.pem", 10001), *((f"agency-{i}-key.pem", 10002) for i in (1, 2, 3, 4, 5))]:
        path = SECRETS / name
        assert path.stat().st_mode & 0o077 == 0o040, name  # group bits: the ACL's mask; others nothing
        entries = key_acl_entries(path)
        assert (2, 4, uid) in entries and all(tag != 2 or ident == uid for tag, _, ident in entries), name
        assert (4, 0, 0xFFFFFFFF) in entries and (0x20, 0, 0xFFFFFFFF) in entries, name  # group, others: none
    assert key_acl_entries(SECRETS / "ca-key.pem") == []


def key_acl_entries(path: Path) -> list[tuple[int, int, int]]:
    """The (tag, perm, id) entries of `path`'s POSIX ACL; [] without one."""
    try:
        value = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return []
    return [struct.unpack_from("<HHI", value, offset) for offset in range(4, len(value), 8)]


def test_five_agencies_get_their_winners_and_everything_stops_cleanly(compose) -> None:
    project = compose(5)
    project("up", "-d", timeout=300)
    for agency, client in enumerate(project.clients, start=1):
        assert project.wait_exit(client) == 0, project.logs(client)[-3000:]
        log = project.logs(client)
        assert f"action: consulta_ganadores | result: success | cant_ganadores: {DEFAULT_WINNERS[agency]}" in log
        assert shutdown_logged(log), log[-2000:]
    server_log = project.logs("server")
    assert server_log.count("action: sorteo | result: success") == 1
    assert "action: config | result: success | port: 12345 | listen_backlog:" in server_log
    assert "agencies: 5" in server_log
    assert "action: listen | result: success | address: 0.0.0.0:12346 | port: health" in server_log
    for agency in range(1, 6):
        assert re.search(rf"action: handshake \| result: success \| peer: \S+ \| agency: {agency} ", server_log)

    # Each container got exactly its own credentials, read-only, at the paths the programs read.
    assert project.secret_mounts("server") == {
        "/run/secrets/ca.pem": str(SECRETS / "ca.pem"), "/run/secrets/server.pem": str(SECRETS / "server.pem"),
        "/run/secrets/server-key.pem": str(SECRETS / "server-key.pem")}
    for agency, client in enumerate(project.clients, start=1):
        assert project.secret_mounts(client) == {
            "/run/secrets/ca.pem": str(SECRETS / "ca.pem"),
            "/run/secrets/agency.pem": str(SECRETS / f"agency-{agency}.pem"),
            "/run/secrets/agency-key.pem": str(SECRETS / f"agency-{agency}-key.pem")}
    check_hardened(project)
    # Nothing is published: the health port is reached from the compose network only.
    assert run("docker", "port", "server", check=False).stdout.strip() == ""

    # The compose health check: healthy, and the agencies started only once it was (the first probe
    # runs 2 s after the start), yet soon after.
    assert project.health() == "healthy"
    delays = [(project.started_at(client) - project.started_at("server")).total_seconds()
              for client in project.clients]
    assert all(1.5 <= delay <= 8 for delay in delays), delays
    assert run("docker", "exec", "server", "python3", "/app/healthcheck.py", check=False).returncode == 0
    wrong = run("docker", "exec", "server", "python3", "/app/healthcheck.py", "12345", check=False)
    assert wrong.returncode == 1 and "healthcheck: fail" in wrong.stderr, wrong  # the TLS port does not echo

    # After the draw the server keeps running and answers health checks.
    check = nc_test()
    assert check.returncode == 0 and check.stdout.strip() == "action: test_echo_server | result: success", check

    project("stop", "-t", "10")
    assert project.state("server") == (False, 0)
    server_log = project.logs("server")
    for line in ("action: shutdown | result: in_progress | signal: SIGTERM", "action: close_listener | result: success",
                 "action: close_storage | result: success"):
        assert line in server_log
    assert shutdown_logged(server_log)

    # With the server down the health check fails, promptly.
    started = time.monotonic()
    check = nc_test()
    assert check.returncode == 1 and check.stdout.strip() == "action: test_echo_server | result: fail", check
    assert time.monotonic() - started < 30

    # The storage volume outlives the container: a restarted server has the draw and its bets.
    project("start", "server")
    project.wait_log("server", r"storage_recovery \| result: success \| batches: \d+ \| fins: 5 .*draw: done", count=1)
    assert nc_test().returncode == 0
    rows = run("docker", "exec", "server", "python3", "-c",
               "print(sum(1 for _ in open('/storage/bets.csv', 'rb')))").stdout.strip()
    assert rows == "80000"


def test_docker_stop_of_one_agency_mid_run(compose) -> None:
    project = compose(2, slow_clients)
    project("up", "-d", timeout=300)
    # Mid-run for agency 1 itself: batches of its own stored (agency 2 alone may store ten before
    # agency 1 has connected, and a stop before the connection has no connection to close).
    project.wait_log("server", r"apuesta_recibida \| result: success \| cantidad: \d+ \| agency: 1 \|", count=3)
    run("docker", "stop", "-t", "10", "client1")
    assert project.state("client1") == (False, 0)
    log = project.logs("client1")
    assert "action: shutdown | result: in_progress | signal: SIGTERM" in log
    assert "action: close_connection | result: success" in log and "action: close_file | result: success" in log
    assert shutdown_logged(log)
    assert project.state("client2")[0] or project.state("client2")[1] == 0  # the other agency is unharmed
    assert project.state("server")[0]
    # The draw waits for agency 1, and the central says so every STATUS_INTERVAL (5 s).
    project.wait_log("server", r"action: sorteo \| result: in_progress \| agencias_listas: 1/2 \| esperando: 1\n",
                     timeout=120)


def test_docker_stop_of_the_server_mid_run(compose) -> None:
    project = compose(2, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success", count=10)
    started = time.monotonic()
    run("docker", "stop", "-t", "10", "server")
    assert time.monotonic() - started < 9, "the server must not need the SIGKILL after the grace period"
    assert project.state("server") == (False, 0)
    log = project.logs("server")
    for line in ("signal: SIGTERM", "action: close_listener | result: success", "action: stop_worker",
                 "action: worker_exit | result: success", "action: close_connection | result: success"):
        assert line in log, log[-3000:]
    assert shutdown_logged(log)


def test_docker_stop_of_everything_at_once(compose) -> None:
    project = compose(3, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success", count=10)
    started = time.monotonic()
    project("stop", "-t", "10")
    assert time.monotonic() - started < 20
    for container in ["server", *project.clients]:
        assert project.state(container) == (False, 0), project.logs(container)[-2000:]
        assert shutdown_logged(project.logs(container)), container


def test_hand_made_agency_and_bad_input_beside_real_agencies(compose) -> None:
    """Agency 3 is played by raw_peer.py: HELLO, a batch sent one byte at a time, the largest batch, a
    reconnection whose RESUME states what is stored, a resend of the last batch; the attacks
    before it (agency 3's batches and FIN among them) store nothing."""

    def three_agencies_two_real(spec: dict) -> None:
        spec["services"]["server"]["environment"] = ["AGENCIES=3"]

    project = compose(2, three_agencies_two_real)
    project("up", "-d", timeout=300)
    issue(4)  # agency 3's pair for the hand-made agency, agency 4's for a certificate outside the round
    attack = project.raw_peer("attacks")
    assert attack.returncode == 0, attack.stdout + attack.stderr
    assert attack.stdout.count("ok ") >= 23, attack.stdout
    assert "ok BETS_MISMATCH names both checksums" in attack.stdout
    for line in ("ok plaintext on the TLS port is closed without an answer",
                 "ok a TLS client without a certificate is refused", "ok the certificate of agency 4",
                 "ok AGENCY_MISMATCH answered to a HELLO naming agency 2", "ok a truncated frame is closed"):
        assert line in attack.stdout, attack.stdout
    manual = project.raw_peer("agency", "3")
    assert manual.returncode == 0, manual.stdout + manual.stderr
    for line in ("ok HELLO answered: nothing stored yet", "ok one byte at a time: batch 1 acknowledged",
                 "ok a resend of the last batch acknowledged", "ok HELLO after FIN: finished"):
        assert line in manual.stdout, manual.stdout
    assert re.search(r"^ok HELLO after reconnecting: \d+ bets stored, chain [0-9a-f]{8}$", manual.stdout, re.M)
    largest = re.search(r"ok largest batch is 8192 bytes, (\d+) bets", manual.stdout)
    assert largest, manual.stdout
    # Agency 3's winners: the first bet of each of its two batches has 7574, and only those.
    assert re.search(r"^winners: 2 39000001,40000000$", manual.stdout, re.M), manual.stdout
    for agency, client in enumerate(project.clients, start=1):
        assert project.wait_exit(client) == 0, project.logs(client)[-3000:]
        assert f"cant_ganadores: {DEFAULT_WINNERS[agency]}" in project.logs(client)
    server_log = project.logs("server")
    for code in ("FRAME_TOO_LARGE", "UNSUPPORTED_VERSION", "UNKNOWN_TYPE", "INVALID_BET", "AGENCY_MISMATCH",
                 "BETS_MISMATCH", "SEQUENCE_GAP"):
        assert re.search(rf"result: fail \|.*code: {code}", server_log), code
    assert "truncated frame" in server_log
    for reason in ("not a TLS ClientHello", "no client certificate", "is not agency-N with N in 1..3"):
        assert re.search(rf"action: handshake \| result: fail \|.*{reason}", server_log), reason
    assert "action: apuesta_recibida | result: fail | cantidad: 1" in server_log
    rows = run("docker", "exec", "server", "python3", "-c",
               "print(sum(1 for _ in open('/storage/bets.csv', 'rb')))").stdout.strip()
    assert int(rows) == 2 * 16_000 + 2 + int(largest.group(1))  # the attacks stored nothing
    assert re.search(r"action: fin \| result: success \| agency: 3 \| bets: \d+", server_log)


def test_a_failed_fsync_stops_the_server_and_compose_restarts_it(compose) -> None:
    """Fail-stop under Compose: an fdatasync error injected (strace, from the host) into a worker
    makes the central exit 3; the restart policy starts it again, recovery runs, and the agencies,
    which kept retrying, finish with exact winners and every bet stored once."""
    project = compose(2, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success", count=1)
    # Every worker accepts agencies, so each gets the fault: the first fdatasync after the attach,
    # in whichever worker commits next, fails. -f: a worker syncs in a thread of its own.
    supervisor = int(run("docker", "inspect", "-f", "{{.State.Pid}}", "server").stdout)
    workers = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    tracers = [subprocess.Popen(["strace", "-qq", "-f", "-p", worker, "-e", "trace=fdatasync",
                                 "-e", "inject=fdatasync:error=EIO:when=1", "-o", "/dev/null"])
               for worker in workers]
    try:
        project.wait_log("server", r"action: storage_sync \| result: fail", timeout=60)
    finally:
        for tracer in tracers:
            tracer.kill()
            tracer.wait(timeout=10)
    project.wait_log("server", r"action: exit \| result: fail", timeout=30)
    project.wait_log("server", r"action: storage_recovery \| result: success", count=2, timeout=60)
    for agency, client in enumerate(project.clients, start=1):
        assert project.wait_exit(client) == 0, project.logs(client)[-3000:]
        assert f"cant_ganadores: {DEFAULT_WINNERS[agency]}" in project.logs(client)
    restarts = run("docker", "inspect", "-f", "{{.RestartCount}}", "server").stdout.strip()
    assert restarts == "1"
    documents = run("docker", "exec", "server", "python3", "-c",
                    "import csv; rows = list(csv.reader(open('/storage/bets.csv', encoding='utf-8')));"
                    "print(len(rows), len({r[3] for r in rows}))").stdout.split()
    assert documents == ["32000", "32000"]


def test_agencies_killed_mid_run_and_restarted_store_every_bet_once(compose) -> None:
    """docker kill (SIGKILL) of two agencies mid-run: client1 is started again as it was,
    client2 is recreated with another batch size. Each resumes after what the server stores."""
    project = compose(2, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success \| cantidad: \d+ \| agency: 1 ", count=30)
    project.wait_log("server", r"apuesta_recibida \| result: success \| cantidad: \d+ \| agency: 2 ", count=30)
    run("docker", "kill", "client1", "client2")
    run("docker", "start", "client1")  # the same container: the same batch size

    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    env = spec["services"]["client2"]["environment"]
    spec["services"]["client2"]["environment"] = [e for e in env if not e.startswith("CLI_BATCH_MAXAMOUNT=")] + [
        "CLI_BATCH_MAXAMOUNT=37"]
    COMPOSE_FILE.write_text(yaml.safe_dump(spec, sort_keys=False))
    project("up", "-d", "--no-deps", "client2", timeout=120)  # recreated with another batch size
    for agency, client in enumerate(project.clients, start=1):
        assert project.wait_exit(client) == 0, project.logs(client)[-3000:]
        log = project.logs(client)
        assert re.search(r"action: verificar_apuestas \| result: success \| stored: [1-9]", log), log[-2000:]
        assert f"cant_ganadores: {DEFAULT_WINNERS[agency]}" in log
    counts = run("docker", "exec", "server", "python3", "-c",
                 "import csv, collections; rows = list(csv.reader(open('/storage/bets.csv', encoding='utf-8')));"
                 "print(len(rows), len({(r[0], r[3]) for r in rows}))").stdout.split()
    assert counts == ["32000", "32000"]


def test_without_go_the_credentials_are_issued_in_the_go_image(images, tmp_path: Path) -> None:
    """compose_maker.py on a machine with Docker and no Go: cmd/certs runs in GO_IMAGE, as the
    user, and the credentials work for mutual TLS."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(shutil.which("docker"))  # docker, and no go, on PATH
    directory = tmp_path / "secrets"
    result = issue(2, directory, PATH=str(bin_dir))
    created = sorted(line.rsplit("/", 1)[1] for line in result.stdout.splitlines() if line.startswith("created "))
    assert created == sorted(["ca-key.pem", "ca.pem", "server-key.pem", "server.pem", "agency-1-key.pem",
                              "agency-1.pem", "agency-2-key.pem", "agency-2.pem"]), result.stdout
    for name in created:
        info = (directory / name).stat()
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid()), name
        # A key: 0600, plus read for its container's uid (a POSIX ACL, shown as the group bits).
        expected = 0o644 if not name.endswith("key.pem") else 0o600 if name == "ca-key.pem" else 0o640
        assert info.st_mode & 0o777 == expected, name
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(str(directory / "ca.pem"))
    client.load_cert_chain(str(directory / "agency-2.pem"), str(directory / "agency-2-key.pem"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(str(directory / "ca.pem"))
    server.load_cert_chain(str(directory / "server.pem"), str(directory / "server-key.pem"))
    # A handshake in memory: each side verifies the other against the CA.
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    client_side = client.wrap_bio(to_client, to_server, server_hostname="server")
    for _ in range(5):
        for side in (client_side, server_side):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
    client_side.write(b"x")
    assert server_side.read(1) == b"x"
    assert dict(rdn[0] for rdn in server_side.getpeercert()["subject"])["commonName"] == "agency-2"
