#!/usr/bin/env python3
"""Writes docker-compose-dev.yaml and its Swarm stack file: the server plus N agency clients.
The command line and the data files are this file's; what the compose and stack files hold is
tools/compose_spec.py's, and the credentials (issuing, who reads a key) tools/credentials.py's.

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
import subprocess
import sys
from collections.abc import Sequence
from typing import NoReturn

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
from compose_spec import compose, render, stack, stack_output  # noqa: E402
from credentials import (  # noqa: E402
    DEFAULT_GO_IMAGE,
    SecretsError,
    ensure_secrets,
    grant_keys,
    secrets_problems,
)


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
        problems = [p for directory, agencies in needed.items() for p in secrets_problems(directory, agencies)]
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
    problems = _data_problems(args.data_dir, args.agencies) + secrets_problems(args.secrets_dir, args.agencies)
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
