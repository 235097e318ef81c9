#!/usr/bin/env python3
"""Writes docker-compose-dev.yaml and its Swarm stack file: the server plus N agency clients.

    python compose_maker.py [N] [--output docker-compose-dev.yaml] [--data-dir .data]
                            [--secrets-dir .secrets] [--stack-output FILE]
    python compose_maker.py --secrets-only [N] [--output docker-compose-dev.yaml]

N (default 1) must be an integer >= 1; anything else is a usage error (exit 2) and nothing is
written. Each client i bind-mounts `<data-dir>/agency-i.csv`; a missing one is generated with
tools/gen_data.py (seed 7574, the default set's bet count per agency and winners rule), so
agencies 1..5 come out identical to the default set and N above 5 works. If `agency-i.csv` is a
directory (what Docker leaves behind when it bind-mounts a missing file) that is an error, exit
1, and nothing is written. The compose file is written atomically (temp file + rename); its
relative paths resolve against the compose file's directory, so write it at the repo root and
run `docker compose -f docker-compose-dev.yaml ...` from there.

Credentials (mutual TLS): the missing PEM files of `<secrets-dir>` (ca.pem, server.pem,
server-key.pem, agency-i.pem, agency-i-key.pem for i in 1..N) are issued by the project's Go
command client/cmd/certs (crypto/x509), which never overwrites a file; each file created is
printed as `created <secrets-dir>/<file>`. When nothing is missing no command runs. With `go` on
PATH it runs on the host; otherwise in the Go build image (GO_IMAGE, default golang:1.26) under
`docker run`, as the invoking user, so the files are the user's either way. The compose file
hands them to the containers as Compose secrets: the server gets ca.pem and its own pair, agency
i only ca.pem and agency i's pair, at the paths the programs read by default (/run/secrets/...);
ca-key.pem is never handed to anyone.

The stack file (`--stack-output`, default the compose file's name with `.stack.yaml` for `.yaml`:
docker-compose-dev.stack.yaml) is the same system for `docker stack deploy` (`make swarm-up`):
Swarm secrets with uid/gid/mode, Swarm configs for the two config files, an overlay network,
`endpoint_mode: dnsrr`, restart policies, the central pinned to the nodes labelled
`lottery.storage=true`, the images, the storage and the data directory from variables
(SERVER_IMAGE, CLIENT_IMAGE, LOTTERY_STORAGE, LOTTERY_DATA_DIR). docs/swarm.md explains it.

Both files run the containers hardened (CIS Docker Benchmark): a non-root user (the central
10001, the agencies 10002), a read-only root filesystem, cap_drop ALL, no-new-privileges (Compose;
Swarm on Engine 20.10 has no such service option: docs/swarm.md), memory and pids limits. The
keys stay 0600 for every host user but one named uid: compose_maker grants the containers' user
read access to the keys it mounts with a POSIX ACL (server-key.pem: uid 10001; agency-i-key.pem:
uid 10002), because Compose bind-mounts file secrets as they are on the host (uid/gid/mode are
ignored there).

--secrets-only issues credentials and writes nothing else: for agencies 1..N, or, without N, for
whatever the compose file named by --output hands out (`make secrets` runs this before
`docker compose up`, so a fresh clone's committed compose file gets its credentials).

Run by a Python without PyYAML, it says so in one line (stderr), sets up the project's virtual
environment as the Makefile does (`.venv`, or $LOTTERY_VENV: `python -m venv`, then `pip install
-r requirements.txt`, done again when requirements.txt changed; `.venv/requirements.txt` is the
copy installed last) and runs itself again with that environment's Python. Where the running
Python cannot create one (no `venv`/`ensurepip` module), it says what to install and exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

ROOT = os.path.dirname(os.path.abspath(__file__))
# The virtual environment the Makefile's Python targets use (make VENV=...), and the variable that
# marks a run as the one started in it, so a venv still lacking PyYAML fails instead of looping.
VENV_VARIABLE = "LOTTERY_VENV"
REEXEC_VARIABLE = "LOTTERY_VENV_REEXEC"


def _shown(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


def _run_in_venv() -> NoReturn:
    """Run this script again with the project's venv Python (creating or updating the venv from
    requirements.txt first); exit 1, saying what to install, where that is not possible."""
    venv = os.path.abspath(os.environ.get(VENV_VARIABLE) or os.path.join(ROOT, ".venv"))
    python = os.path.join(venv, "bin", "python")
    requirements = os.path.join(ROOT, "requirements.txt")
    installed = os.path.join(venv, "requirements.txt")
    yourself = f"{sys.executable} -m pip install -r {_shown(requirements)}"

    def fail(problem: str) -> NoReturn:
        print(f"compose_maker.py: error: {problem}", file=sys.stderr)
        sys.exit(1)

    if os.environ.get(REEXEC_VARIABLE):
        fail(f"PyYAML is missing even in {_shown(python)}: remove {_shown(venv)} and run again, or run {yourself}")
    try:
        with open(requirements, "rb") as file:
            wanted = file.read()
    except OSError as err:
        fail(f"PyYAML is missing from {sys.executable} and {requirements} cannot be read ({err.strerror})")
    try:
        with open(installed, "rb") as file:
            ready = file.read() == wanted and os.access(python, os.X_OK)
    except OSError:
        ready = False
    creating = not os.access(python, os.X_OK)
    if creating:
        try:
            import ensurepip  # noqa: F401  (what `python -m venv` needs to put pip in the venv)
            import venv as _venv  # noqa: F401
        except ImportError:
            fail(f"PyYAML is missing from {sys.executable}, which cannot create {_shown(venv)} (no venv/ensurepip "
                 f"module): install it (Debian/Ubuntu: apt-get install python3-venv) and run again, or run {yourself}")
    how = "" if ready else f" ({'created' if creating else 'updated'} from requirements.txt)"
    print(f"compose_maker.py: PyYAML is missing from {sys.executable}; running again with {_shown(python)}{how}",
          file=sys.stderr, flush=True)
    if not ready:
        steps = [[python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements]]
        if creating:
            steps.insert(0, [sys.executable, "-m", "venv", venv])
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                output = (result.stderr.strip() or result.stdout.strip()).splitlines()
                hint = " (Debian/Ubuntu: apt-get install python3-venv)" if step[0] == sys.executable else ""
                fail(f"{' '.join(step[:4])} ... failed{hint}; or run {yourself}\n" + "\n".join(output[-15:]))
        with open(installed, "wb") as copy:
            copy.write(wanted)
    os.environ[REEXEC_VARIABLE] = "1"
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


try:
    import yaml
except ImportError:  # a Python without PyYAML, as on a fresh machine: use the project's venv
    _run_in_venv()

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_data  # noqa: E402  (tools/ is not a package)

PROJECT_NAME = "lottery"
NETWORK = "lottery_net"
STORAGE_VOLUME = "server-storage"
STOP_GRACE_PERIOD = "10s"
CLIENT_DATA_PATH = "/data/agency.csv"
CLIENT_DIR = os.path.join(ROOT, "client")
DEFAULT_GO_IMAGE = "golang:1.26"
# Where a container finds each credential: the defaults of the server's TLS_CA/TLS_CERT/TLS_KEY
# and of the agency's tls.ca/tls.cert/tls.key, so no environment variable is needed.
SECRETS_TARGET = "/run/secrets"
CA_FILE = "ca.pem"
SERVER_FILES = ("server.pem", "server-key.pem")
CERTS_TIMEOUT = 600  # seconds for the issuing command, a first `go run` (or image start) included
# The server's health check, run by Docker inside the server container: one ECHO to the plaintext
# health port. Docker runs the first probe `interval` after the start (Engine 20.10 has no
# start_interval), so a normal start (well under a second) is healthy after 2 s and the agencies,
# which wait for it, start then; a slower one after 4 s. Misses within `start_period` (a slow
# recovery) do not count; after it, 3 in a row mark the server unhealthy. `timeout` bounds a probe
# (healthcheck.py gives up after 2 s itself).
# Hardening (docs/swarm.md, "Hardened containers"). The users are numeric (the client image is
# scratch): the Dockerfiles set the same ones, the files say them again so an older image cannot
# run as root.
SERVER_UID = 10001
AGENCY_UID = 10002
# Limits sized from the benchmark (docs/swarm.md): the central peaks at about 90 MiB resident with
# 1,000 agencies (make bench BENCH_ARGS="--agencies 1000 --bets 1000000"); an agency's resident
# memory does not grow with its file (it streams it). Page cache is charged to the container too,
# but is reclaimed at the limit.
SERVER_MEMORY = "256m"
SERVER_PIDS = 256  # the supervisor, one worker per CPU (WORKERS=0), health checks, docker exec
AGENCY_MEMORY = "64m"
AGENCY_PIDS = 64  # Go's threads
# A central that exits 1 (bad configuration, another round's storage, the storage in use) cannot
# be fixed by a restart, a fail-stop (exit 3) is: restarts are limited, not endless.
SERVER_RESTART_ATTEMPTS = 5
HARDENING: dict[str, Any] = {
    "read_only": True,
    "cap_drop": ["ALL"],
}
# Swarm (docs/swarm.md): the restart delay, the central's window for counting its attempts.
SWARM_RESTART_DELAY = "5s"
SWARM_SERVER_WINDOW = "2m"
AGENCY_RESTART_ATTEMPTS = 10
STORAGE_LABEL = "lottery.storage"
HEALTHCHECK = {
    "test": ["CMD", "python3", "/app/healthcheck.py"],
    "interval": "2s",
    "timeout": "3s",
    "retries": 3,
    "start_period": "30s",
}


def agency_files(agency: int) -> tuple[str, str]:
    """Agency `agency`'s certificate and key file names (client/internal/certs)."""
    return f"agency-{agency}.pem", f"agency-{agency}-key.pem"


def credential_files(agencies: int) -> list[str]:
    """Every file the containers of a run with `agencies` agencies are handed (not ca-key.pem)."""
    files = [CA_FILE, *SERVER_FILES]
    for agency in range(1, agencies + 1):
        files.extend(agency_files(agency))
    return files


class FlowList(list):
    """A list PyYAML writes inline: `networks: [lottery_net]`."""


class _Dumper(yaml.SafeDumper):
    """Indents block sequences under their key, as hand-written compose files do."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _flow_list(dumper: yaml.SafeDumper, data: FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _empty_null(dumper: yaml.SafeDumper, _data: None) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:null", "")


_Dumper.add_representer(FlowList, _flow_list)
_Dumper.add_representer(type(None), _empty_null)


def _agency_count(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"N must be an integer >= 1, got {text!r}")
    count = int(text)
    if count > gen_data.MAX_AGENCY:
        raise argparse.ArgumentTypeError(f"N must be at most {gen_data.MAX_AGENCY}, got {count}")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write a docker compose file with the server and N agency clients, and issue "
                    "the TLS credentials they lack.",
        epilog=(
            "Missing data files <data-dir>/agency-i.csv are generated with tools/gen_data.py "
            f"(seed {gen_data.DEFAULT_SEED}, "
            f"{gen_data.bets_for_agency(gen_data.DEFAULT_AGENCIES + 1)} "
            "bets for agencies beyond the default set, winners per gen_data's default rule). "
            "Missing credentials are issued with `go run ./cmd/certs` in client/, or, without Go on "
            f"PATH, in the Go image under docker run (GO_IMAGE, default {DEFAULT_GO_IMAGE}); an "
            "existing file is never replaced."
        ),
    )
    parser.add_argument("agencies", metavar="N", nargs="?", type=_agency_count, default=None,
                        help="number of agency clients, integer >= 1 (default 1)")
    parser.add_argument("--output", default="docker-compose-dev.yaml",
                        help="compose file to write (default docker-compose-dev.yaml); with "
                             "--secrets-only and no N, the compose file to read")
    parser.add_argument("--data-dir", default=".data",
                        help="directory of the agency-<i>.csv files (default .data)")
    parser.add_argument("--secrets-dir", default=".secrets",
                        help="directory of the TLS credentials, PEM files (default .secrets); "
                             "missing ones are issued with client/cmd/certs")
    parser.add_argument("--stack-output", default=None,
                        help="Swarm stack file to write (default: --output with .stack.yaml for "
                             ".yaml: docker-compose-dev.stack.yaml)")
    parser.add_argument("--secrets-only", action="store_true",
                        help="only issue the missing credentials: for agencies 1..N, or without N "
                             "for those the compose file (--output) hands to its containers")
    return parser


def mount_source(data_dir: str, output: str, agency: int) -> str:
    """The bind-mount source of agency `agency`'s file as written in the compose file."""
    return compose_path(data_dir, f"agency-{agency}.csv", output)


def compose_path(directory: str, name: str, output: str) -> str:
    """`directory/name` as the compose file names it: relative to the compose file's directory
    (`./.data/agency-1.csv`) when `directory` is given relative and lies under it; absolute
    otherwise."""
    path = os.path.join(directory, name)
    if os.path.isabs(directory):
        return path
    base = os.path.dirname(os.path.abspath(output))
    relative = os.path.relpath(os.path.abspath(path), base)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return os.path.abspath(path)
    return "./" + relative.replace(os.sep, "/")


def config_path(directory: str, name: str, output: str) -> str:
    """A config file of the checkout (`server/config.ini`) as the stack file names it: relative
    (`./server/config.ini`) when the stack file's directory holds it, as at the checkout's root,
    so the committed stack file is the same in every clone; this checkout's absolute path otherwise."""
    if os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(output)), directory, name)):
        return f"./{directory}/{name}"
    return os.path.join(ROOT, directory, name)


def secret_name(file: str) -> str:
    """The compose secret holding `file`: ca.pem -> ca-cert, agency-1-key.pem -> agency-1-key."""
    stem = file.removesuffix(".pem")
    return stem if stem.endswith("-key") else f"{stem}-cert"


def _secret_mounts(files: dict[str, str]) -> list[dict[str, str]]:
    """Long-syntax service secrets: {file in the secrets dir: file name in /run/secrets}."""
    return [{"source": secret_name(file), "target": f"{SECRETS_TARGET}/{target}"} for file, target in files.items()]


def compose(agencies: int, data_dir: str, output: str, secrets_dir: str = ".secrets") -> dict[str, Any]:
    services: dict[str, Any] = {
        "server": {
            "container_name": "server",
            "image": "server:latest",
            "user": f"{SERVER_UID}:{SERVER_UID}",
            "environment": [f"AGENCIES={agencies}"],
            "volumes": ["./server/config.ini:/app/config.ini:ro", f"{STORAGE_VOLUME}:/storage"],
            # The CA (to verify the agencies) and the central's own certificate and key.
            "secrets": _secret_mounts({CA_FILE: CA_FILE, **{f: f for f in SERVER_FILES}}),
            "networks": FlowList([NETWORK]),
            "healthcheck": {**HEALTHCHECK, "test": FlowList(HEALTHCHECK["test"])},
            "stop_grace_period": STOP_GRACE_PERIOD,
            # A fail-stop (a failed fsync: exit 3) is followed by recovery without an operator;
            # `docker stop` and `make docker-compose-down` are not failures and stay stopped; a
            # central that keeps refusing to start is given up after SERVER_RESTART_ATTEMPTS.
            "restart": f"on-failure:{SERVER_RESTART_ATTEMPTS}",
            **_compose_hardening(SERVER_MEMORY, SERVER_PIDS),
        }
    }
    for agency in range(1, agencies + 1):
        name = f"client{agency}"
        cert, key = agency_files(agency)
        services[name] = {
            "container_name": name,
            "image": "client:latest",
            "user": f"{AGENCY_UID}:{AGENCY_UID}",
            "environment": [f"CLI_ID={agency}", f"CLI_DATA_PATH={CLIENT_DATA_PATH}"],
            "volumes": [
                "./client/config.yaml:/config.yaml:ro",
                f"{mount_source(data_dir, output, agency)}:{CLIENT_DATA_PATH}:ro",
            ],
            # The CA (to verify the central) and this agency's own pair: never another's key.
            "secrets": _secret_mounts({CA_FILE: CA_FILE, cert: "agency.pem", key: "agency-key.pem"}),
            "networks": FlowList([NETWORK]),
            # Started once the central answers its health check, not merely once it was started.
            "depends_on": {"server": {"condition": "service_healthy"}},
            "stop_grace_period": STOP_GRACE_PERIOD,
            **_compose_hardening(AGENCY_MEMORY, AGENCY_PIDS),
        }
    return {
        "name": PROJECT_NAME,
        "services": services,
        "networks": {NETWORK: {"driver": "bridge"}},
        "volumes": {STORAGE_VOLUME: None},
        "secrets": {secret_name(file): {"file": compose_path(secrets_dir, file, output)}
                    for file in credential_files(agencies)},
    }


def _compose_hardening(memory: str, pids: int) -> dict[str, Any]:
    return {
        **HARDENING,
        "cap_drop": FlowList(HARDENING["cap_drop"]),
        "security_opt": FlowList(["no-new-privileges:true"]),
        "mem_limit": memory,
        "pids_limit": pids,
    }


def _swarm_hardening() -> dict[str, Any]:
    return {**HARDENING, "cap_drop": FlowList(HARDENING["cap_drop"])}


def _swarm_secrets(files: dict[str, str], uid: int) -> list[dict[str, Any]]:
    """Swarm secrets, {file in the secrets dir: name in /run/secrets}: owned by the container's
    user, keys 0400, certificates 0444 (modes in decimal, as Swarm takes them)."""
    return [{"source": secret_name(file), "target": target, "uid": str(uid), "gid": str(uid),
             "mode": 0o400 if file.endswith("-key.pem") else 0o444} for file, target in files.items()]


def stack(agencies: int, data_dir: str, output: str, secrets_dir: str = ".secrets") -> dict[str, Any]:
    """The Swarm stack file (`docker stack deploy -c`): docs/swarm.md explains each choice."""
    data = compose_path(data_dir, "", output).rstrip("/")
    services: dict[str, Any] = {
        "server": {
            "image": "${SERVER_IMAGE:-server:latest}",
            "user": f"{SERVER_UID}:{SERVER_UID}",
            "environment": [f"AGENCIES={agencies}"],
            # A named volume on the node labelled lottery.storage=true, or, with LOTTERY_STORAGE
            # set to an absolute path, that directory (the same on every node: NFS), writable by
            # uid 10001.
            "volumes": [f"${{LOTTERY_STORAGE:-{STORAGE_VOLUME}}}:/storage"],
            "configs": [{"source": "server-config", "target": "/app/config.ini", "mode": 0o444}],
            "secrets": _swarm_secrets({CA_FILE: CA_FILE, **{f: f for f in SERVER_FILES}}, SERVER_UID),
            "networks": FlowList([NETWORK]),
            "healthcheck": {**HEALTHCHECK, "test": FlowList(HEALTHCHECK["test"])},
            "stop_grace_period": STOP_GRACE_PERIOD,
            **_swarm_hardening(),
            "deploy": {
                "replicas": 1,
                "endpoint_mode": "dnsrr",
                "placement": {"constraints": [f"node.labels.{STORAGE_LABEL} == true"]},
                "restart_policy": {"condition": "on-failure", "delay": SWARM_RESTART_DELAY,
                                   "max_attempts": SERVER_RESTART_ATTEMPTS, "window": SWARM_SERVER_WINDOW},
                "resources": {"limits": {"memory": SERVER_MEMORY.upper(),
                                         "pids": SERVER_PIDS}},
            },
        }
    }
    for agency in range(1, agencies + 1):
        cert, key = agency_files(agency)
        services[f"client{agency}"] = {
            "image": "${CLIENT_IMAGE:-client:latest}",
            "user": f"{AGENCY_UID}:{AGENCY_UID}",
            "environment": [f"CLI_ID={agency}", f"CLI_DATA_PATH={CLIENT_DATA_PATH}"],
            # The same path on every node that may run the agency (docs/swarm.md).
            "volumes": [f"${{LOTTERY_DATA_DIR:-{data}}}/agency-{agency}.csv:{CLIENT_DATA_PATH}:ro"],
            "configs": [{"source": "client-config", "target": "/config.yaml", "mode": 0o444}],
            "secrets": _swarm_secrets({CA_FILE: CA_FILE, cert: "agency.pem", key: "agency-key.pem"}, AGENCY_UID),
            "networks": FlowList([NETWORK]),
            "stop_grace_period": STOP_GRACE_PERIOD,
            **_swarm_hardening(),
            "deploy": {
                "replicas": 1,
                "endpoint_mode": "dnsrr",
                # Exit 0 (the round done) is final; a crash, a lost node, giving up while the
                # central was away: started again, and the agency resumes where the storage says.
                "restart_policy": {"condition": "on-failure", "delay": SWARM_RESTART_DELAY,
                                   "max_attempts": AGENCY_RESTART_ATTEMPTS},
                "resources": {"limits": {"memory": AGENCY_MEMORY.upper(), "pids": AGENCY_PIDS}},
            },
        }
    return {
        "version": "3.9",
        "services": services,
        "networks": {NETWORK: {"driver": "overlay"}},
        "volumes": {STORAGE_VOLUME: None},
        "configs": {
            "server-config": {"file": config_path("server", "config.ini", output)},
            "client-config": {"file": config_path("client", "config.yaml", output)},
        },
        "secrets": {secret_name(file): {"file": compose_path(secrets_dir, file, output)}
                    for file in credential_files(agencies)},
    }


def stack_output(output: str) -> str:
    """The default stack file of compose file `output`: docker-compose-dev.yaml ->
    docker-compose-dev.stack.yaml."""
    stem = output[:-len(".yaml")] if output.endswith(".yaml") else output
    return stem + ".stack.yaml"


def _posix_acl(entries: list[tuple[int, int, int]]) -> bytes:
    """The system.posix_acl_access value of (tag, perm, id) entries (linux/posix_acl_xattr.h)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


def grant_read(path: str, uid: int) -> None:
    """Let `uid` (a container's user) read `path`, one more POSIX ACL entry, and no one else: the
    owner keeps its permissions, the group and others theirs (none, for a 0600 key)."""
    mode = os.stat(path).st_mode
    owner, group, other = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
    try:  # with an ACL the mode's group bits are its mask: the group's own are in the ACL
        current = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        current = b""
    for offset in range(4, len(current) - 7, 8):
        tag, perm, _ = struct.unpack_from("<HHI", current, offset)
        if tag == 0x04:
            group = perm
    undefined = 0xFFFFFFFF
    acl = _posix_acl([(0x01, owner, undefined), (0x02, 4, uid), (0x04, group, undefined),
                      (0x10, group | 4, undefined), (0x20, other, undefined)])
    os.setxattr(path, "system.posix_acl_access", acl)


def key_readers(agencies: int) -> dict[str, int]:
    """{key file: the uid of the only container user that reads it}."""
    return {SERVER_FILES[1]: SERVER_UID, **{agency_files(i)[1]: AGENCY_UID for i in range(1, agencies + 1)}}


def grant_keys(secrets_dir: str, agencies: int) -> None:
    """Grant each container's user read access to the key Compose bind-mounts for it."""
    for file, uid in key_readers(agencies).items():
        path = os.path.join(secrets_dir, file)
        try:
            grant_read(path, uid)
        except OSError as err:
            raise SecretsError(
                f"cannot let uid {uid} (the container's user) read {path} with a POSIX ACL ({err.strerror}); "
                f"on a filesystem without ACLs put {secrets_dir} elsewhere (--secrets-dir), or run "
                f"'setfacl -m u:{uid}:r {path}' where it works") from None


def render(agencies: int, document: dict[str, Any], stack_file: bool = False) -> str:
    what = "the Swarm stack file (make swarm-up, docs/swarm.md); " if stack_file else ""
    header = (
        f"# generated by compose_maker.py {agencies}; {what}do not edit.\n"
        f"# Regenerate with: python compose_maker.py {agencies}\n"
    )
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                              default_flow_style=False, width=1000)


def _data_problems(data_dir: str, agencies: int) -> list[str]:
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        return [f"data dir {data_dir} exists and is not a directory"]
    problems = []
    for agency in range(1, agencies + 1):
        path = os.path.join(data_dir, f"agency-{agency}.csv")
        if os.path.isdir(path):
            problems.append(
                f"{path} is a directory, not a data file (Docker creates one when it "
                "bind-mounts a missing file); remove it (rmdir) and run again"
            )
        elif os.path.exists(path) and not os.path.isfile(path):
            problems.append(f"{path} is not a regular file")
    return problems


def ensure_data(data_dir: str, agencies: int) -> None:
    """Generate every missing `<data-dir>/agency-i.csv`, saying so on stdout."""
    for agency in range(1, agencies + 1):
        path = os.path.join(data_dir, f"agency-{agency}.csv")
        if os.path.isfile(path):
            continue
        bets = gen_data.bets_for_agency(agency)
        winners = gen_data.winners_for_agency(agency)
        gen_data.generate_agency(path, agency, bets, winners, gen_data.DEFAULT_SEED)
        print(f"generated {path} ({bets} bets, {winners} winners)")


class SecretsError(Exception):
    """The credentials could not be issued (no Go and no Docker, or the issuing command failed)."""


def _secrets_problems(secrets_dir: str, agencies: int) -> list[str]:
    if os.path.exists(secrets_dir) and not os.path.isdir(secrets_dir):
        return [f"secrets dir {secrets_dir} exists and is not a directory"]
    problems = []
    for file in credential_files(agencies):
        path = os.path.join(secrets_dir, file)
        if os.path.isdir(path):
            problems.append(
                f"{path} is a directory, not a credential (Docker creates one when it bind-mounts "
                "a missing file); remove it (rmdir) and run again"
            )
        elif os.path.exists(path) and not os.path.isfile(path):
            problems.append(f"{path} is not a regular file")
    return problems


def missing_credentials(secrets_dir: str, agencies: int) -> list[str]:
    return [file for file in credential_files(agencies) if not os.path.isfile(os.path.join(secrets_dir, file))]


def issue_command(secrets_dir: str, agencies: int) -> list[str]:
    """The command that issues the missing credentials of agencies 1..`agencies` (and the CA and
    the server's) into `secrets_dir`: client/cmd/certs with the host's Go, else in GO_IMAGE."""
    certs_args = ["./cmd/certs", "-agencies", str(agencies)]
    if shutil.which("go"):
        return ["go", "run", "-mod=vendor", *certs_args, "-dir", os.path.abspath(secrets_dir)]
    if not shutil.which("docker"):
        raise SecretsError(
            "issuing the TLS credentials needs Go (go on PATH) or Docker (to run it in GO_IMAGE); "
            "neither was found"
        )
    image = os.environ.get("GO_IMAGE") or DEFAULT_GO_IMAGE
    user = [f"--user={os.getuid()}:{os.getgid()}"] if hasattr(os, "getuid") else []  # files owned by the user
    return [
        "docker", "run", "--rm", *user,
        "-e", "CGO_ENABLED=0", "-e", "GOFLAGS=-mod=vendor -buildvcs=false", "-e", "GOTOOLCHAIN=local",
        "-e", "GOPROXY=off", "-e", "HOME=/tmp", "-e", "GOCACHE=/tmp/go-cache", "-e", "GOMODCACHE=/tmp/go-mod",
        "-v", f"{CLIENT_DIR}:/src:ro", "-v", f"{os.path.abspath(secrets_dir)}:/out", "-w", "/src",
        image, "go", "run", "-mod=vendor", *certs_args, "-dir", "/out",
    ]


def ensure_secrets(secrets_dir: str, agencies: int) -> list[str]:
    """Issue every missing credential of the server and agencies 1..`agencies` into `secrets_dir`
    (never overwriting one), printing `created <secrets-dir>/<file>` for each; returns their names.
    Runs nothing when none is missing."""
    if not missing_credentials(secrets_dir, agencies):
        return []
    os.makedirs(secrets_dir, mode=0o700, exist_ok=True)  # the user's, also when Docker issues
    command = issue_command(secrets_dir, agencies)
    try:
        result = subprocess.run(command, cwd=CLIENT_DIR, capture_output=True, text=True,
                                timeout=CERTS_TIMEOUT, env={**os.environ, "CGO_ENABLED": "0"})
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SecretsError(f"issuing the TLS credentials ({command[0]}): {err}") from None
    created = []
    for line in result.stdout.splitlines():
        if line.startswith("created "):
            name = line.rsplit("/", 1)[-1]
            created.append(name)
            print(f"created {os.path.join(secrets_dir, name)}")
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}"
        raise SecretsError(f"issuing the TLS credentials ({' '.join(command[:2])} ... cmd/certs) failed:\n{detail}")
    still = missing_credentials(secrets_dir, agencies)
    if still:
        raise SecretsError(f"the issuing command left {', '.join(still)} missing in {secrets_dir}")
    return created


_AGENCY_FILE = re.compile(r"agency-([0-9]+)(?:-key)?\.pem")


def secrets_of_compose(path: str) -> dict[str, int]:
    """{credentials directory: highest agency} for the secret files compose file `path` names."""
    with open(path, encoding="utf-8") as file:
        document = yaml.safe_load(file)
    secrets = document.get("secrets") if isinstance(document, dict) else None
    if not isinstance(secrets, dict) or not secrets:
        raise SecretsError(f"{path} hands out no credentials (no top-level secrets:); regenerate it: "
                           "python compose_maker.py N")
    base = os.path.dirname(path)
    needed: dict[str, int] = {}
    for name, spec in secrets.items():
        file = spec.get("file") if isinstance(spec, dict) else None
        if not isinstance(file, str):
            raise SecretsError(f"{path}: secret {name} has no file")
        directory, leaf = os.path.split(os.path.normpath(os.path.join(base, file)))
        match = _AGENCY_FILE.fullmatch(leaf)
        needed[directory] = max(needed.get(directory, 0), int(match.group(1)) if match else 0)
    return needed


def secrets_only(args: argparse.Namespace) -> int:
    try:
        if args.agencies is not None:
            needed = {args.secrets_dir: args.agencies}
        else:
            if not os.path.isfile(args.output):
                print(f"compose_maker.py: error: {args.output} is missing: run 'python compose_maker.py N' first",
                      file=sys.stderr)
                return 1
            needed = secrets_of_compose(args.output)
        problems = [p for directory, agencies in needed.items() for p in _secrets_problems(directory, agencies)]
        if problems:
            for problem in problems:
                print(f"compose_maker.py: error: {problem}", file=sys.stderr)
            return 1
        for directory, agencies in needed.items():
            ensure_secrets(directory, agencies)
            grant_keys(directory, agencies)
            print(f"credentials ready in {directory}: CA, server, agencies 1..{agencies}")
    except (OSError, yaml.YAMLError, SecretsError) as err:
        print(f"compose_maker.py: error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.secrets_only:
        return secrets_only(args)
    if args.agencies is None:
        args.agencies = 1
    problems = _data_problems(args.data_dir, args.agencies) + _secrets_problems(args.secrets_dir, args.agencies)
    if args.stack_output is None:
        args.stack_output = stack_output(args.output)
    for option, path in (("--output", args.output), ("--stack-output", args.stack_output)):
        if os.path.isdir(path):
            problems.append(f"{option} {path} is a directory")
        elif not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            problems.append(f"directory of {option} {path} does not exist")
    if os.path.abspath(args.output) == os.path.abspath(args.stack_output):
        problems.append(f"--stack-output {args.stack_output} is the compose file (--output)")
    if problems:
        for problem in problems:
            print(f"compose_maker.py: error: {problem}", file=sys.stderr)
        return 1
    try:
        ensure_data(args.data_dir, args.agencies)
        ensure_secrets(args.secrets_dir, args.agencies)
        grant_keys(args.secrets_dir, args.agencies)
        document = compose(args.agencies, args.data_dir, args.output, args.secrets_dir)
        gen_data.write_atomically(args.output, render(args.agencies, document).encode("utf-8"))
        swarm = stack(args.agencies, args.data_dir, args.stack_output, args.secrets_dir)
        gen_data.write_atomically(args.stack_output, render(args.agencies, swarm, stack_file=True).encode("utf-8"))
    except (OSError, gen_data.GenerationError, SecretsError) as err:
        print(f"compose_maker.py: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: server and {args.agencies} client(s)")
    print(f"wrote {args.stack_output}: the same for docker stack deploy (make swarm-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
