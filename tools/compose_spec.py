"""The files compose_maker.py writes (owned here): the Docker Compose file and the Swarm stack
file for N agencies, with their services, hardening, secrets and paths, rendered as YAML.
docs/swarm.md explains each choice; the credentials they name are credentials.py's.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from credentials import AGENCY_UID, CA_FILE, SERVER_FILES, SERVER_UID, agency_files, credential_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_NAME = "lottery"
NETWORK = "lottery_net"
STORAGE_VOLUME = "server-storage"
STOP_GRACE_PERIOD = "10s"
CLIENT_DATA_PATH = "/data/agency.csv"
# Where a container finds each credential: the defaults of the server's TLS_CA/TLS_CERT/TLS_KEY
# and of the agency's tls.ca/tls.cert/tls.key, so no environment variable is needed.
SECRETS_TARGET = "/run/secrets"
# The server's health check, run by Docker inside the server container: one ECHO to the plaintext
# health port. Docker runs the first probe `interval` after the start (Engine 20.10 has no
# start_interval), so a normal start (well under a second) is healthy after 2 s and the agencies,
# which wait for it, start then; a slower one after 4 s. Misses within `start_period` (a slow
# recovery) do not count; after it, 3 in a row mark the server unhealthy. `timeout` bounds a probe
# (healthcheck.py gives up after 2 s itself).
# Hardening (docs/swarm.md, "Hardened containers"): the users (credentials.SERVER_UID and
# AGENCY_UID) are said again in the files so an older image cannot run as root.
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


def render(agencies: int, document: dict[str, Any], stack_file: bool = False) -> str:
    what = "the Swarm stack file (make swarm-up, docs/swarm.md); " if stack_file else ""
    header = (
        f"# generated by compose_maker.py {agencies}; {what}do not edit.\n"
        f"# Regenerate with: python compose_maker.py {agencies}\n"
    )
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                              default_flow_style=False, width=1000)
