#!/usr/bin/env python3
"""Writes docker-compose-dev.yaml: the server plus N agency clients (owns compose_maker.py).

    python compose_maker.py [N] [--output docker-compose-dev.yaml] [--data-dir .data]

N (default 1) must be an integer >= 1; anything else is a usage error (exit 2) and nothing is
written. Each client i bind-mounts `<data-dir>/agency-i.csv`; a missing one is generated with
tools/gen_data.py (seed 7574, the default set's bet count per agency and winners rule), so
agencies 1..5 come out identical to the default set and N above 5 works. If `agency-i.csv` is a
directory (what Docker leaves behind when it bind-mounts a missing file) that is an error, exit
1, and nothing is written. The compose file is written atomically (temp file + rename); its
relative paths resolve against the compose file's directory, so write it at the repo root and
run `docker compose -f docker-compose-dev.yaml ...` from there.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
import gen_data  # noqa: E402  (tools/ is not a package)

PROJECT_NAME = "lottery"
NETWORK = "lottery_net"
STORAGE_VOLUME = "server-storage"
STOP_GRACE_PERIOD = "10s"
CLIENT_DATA_PATH = "/data/agency.csv"


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
        description="Write a docker compose file with the server and N agency clients.",
        epilog=(
            "Missing data files <data-dir>/agency-i.csv are generated with tools/gen_data.py "
            f"(seed {gen_data.DEFAULT_SEED}, "
            f"{gen_data.bets_for_agency(gen_data.DEFAULT_AGENCIES + 1)} "
            "bets for agencies beyond the default set, winners per gen_data's default rule)."
        ),
    )
    parser.add_argument("agencies", metavar="N", nargs="?", type=_agency_count, default=1,
                        help="number of agency clients, integer >= 1 (default 1)")
    parser.add_argument("--output", default="docker-compose-dev.yaml",
                        help="compose file to write (default docker-compose-dev.yaml)")
    parser.add_argument("--data-dir", default=".data",
                        help="directory of the agency-<i>.csv files (default .data)")
    return parser


def mount_source(data_dir: str, output: str, agency: int) -> str:
    """The bind-mount source of agency `agency`'s file as written in the compose file.

    Relative to the compose file's directory (`./.data/agency-1.csv`) when the data dir is given
    relative and lies under it; absolute otherwise.
    """
    path = os.path.join(data_dir, f"agency-{agency}.csv")
    if os.path.isabs(data_dir):
        return path
    base = os.path.dirname(os.path.abspath(output))
    relative = os.path.relpath(os.path.abspath(path), base)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return os.path.abspath(path)
    return "./" + relative.replace(os.sep, "/")


def compose(agencies: int, data_dir: str, output: str) -> dict[str, Any]:
    services: dict[str, Any] = {
        "server": {
            "container_name": "server",
            "image": "server:latest",
            "environment": [f"AGENCIES={agencies}"],
            "volumes": ["./server/config.ini:/app/config.ini:ro", f"{STORAGE_VOLUME}:/storage"],
            "networks": FlowList([NETWORK]),
            "stop_grace_period": STOP_GRACE_PERIOD,
            # A fail-stop (a failed fsync: exit 3) is followed by recovery without an operator;
            # `docker stop` and `make docker-compose-down` are not failures and stay stopped.
            "restart": "on-failure",
        }
    }
    for agency in range(1, agencies + 1):
        name = f"client{agency}"
        services[name] = {
            "container_name": name,
            "image": "client:latest",
            "environment": [f"CLI_ID={agency}", f"CLI_DATA_PATH={CLIENT_DATA_PATH}"],
            "volumes": [
                "./client/config.yaml:/config.yaml:ro",
                f"{mount_source(data_dir, output, agency)}:{CLIENT_DATA_PATH}:ro",
            ],
            "networks": FlowList([NETWORK]),
            "depends_on": FlowList(["server"]),
            "stop_grace_period": STOP_GRACE_PERIOD,
        }
    return {
        "name": PROJECT_NAME,
        "services": services,
        "networks": {NETWORK: {"driver": "bridge"}},
        "volumes": {STORAGE_VOLUME: None},
    }


def render(agencies: int, document: dict[str, Any]) -> str:
    header = (
        f"# generated by compose_maker.py {agencies}; do not edit.\n"
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = _data_problems(args.data_dir, args.agencies)
    output_dir = os.path.dirname(os.path.abspath(args.output))
    if os.path.isdir(args.output):
        problems.append(f"--output {args.output} is a directory")
    elif not os.path.isdir(output_dir):
        problems.append(f"directory of --output {args.output} does not exist")
    if problems:
        for problem in problems:
            print(f"compose_maker.py: error: {problem}", file=sys.stderr)
        return 1
    try:
        ensure_data(args.data_dir, args.agencies)
        document = compose(args.agencies, args.data_dir, args.output)
        gen_data.write_atomically(args.output, render(args.agencies, document).encode("utf-8"))
    except (OSError, gen_data.GenerationError) as err:
        print(f"compose_maker.py: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: server and {args.agencies} client(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
