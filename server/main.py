"""Entry point of the central server: load the configuration, log it, run the supervisor.

    python3 server/main.py            # reads config.ini beside this file
    SERVER_CONFIG=/path/config.ini python3 server/main.py

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT); 1 when the central cannot start (a bad
configuration, a storage in use by another central or holding a round for another AGENCIES, an
address in use); 3 after a storage failure (a failed fsync: fail-stop, recovery at the next start).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from lottery import config as server_config, logs, transport
from lottery.channel import EXIT_START_FAILED
from lottery.durable import StorageError, WriteFailed
from lottery.locks import StorageInUse
from lottery.recovery import RoundMismatch
from lottery.supervisor import Supervisor

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.ini"


def main() -> int:
    logs.setup("INFO")
    log = logging.getLogger("main")
    path = Path(os.environ.get("SERVER_CONFIG", DEFAULT_CONFIG))
    try:
        config = server_config.load(path)
    except server_config.ConfigError as err:
        log.error("action: config | result: fail | key: %s | error: %s", err.key, err.problem)
        return EXIT_START_FAILED
    try:
        tls = transport.server_context(config.tls_ca, config.tls_cert, config.tls_key)
    except transport.TLSConfigError as err:
        log.error("action: config | result: fail | key: %s | error: %s", err.key, err.problem)
        return EXIT_START_FAILED
    logs.setup(config.logging_level)
    log.info("action: config | result: success | %s", config.log_fields())
    try:
        return Supervisor(config, tls).run()
    except StorageInUse as err:
        log.error(
            "action: storage_lock | result: fail | storage: %s | holder: %s | reason: another central is running on"
            " this storage; nothing was touched",
            err.directory,
            err.holder,
        )
    except RoundMismatch as err:
        log.error(
            "action: storage_round | result: fail | storage: %s | round_agencies: %d | agencies: %d | reason: the"
            " storage holds a round for %d agencies; start it with AGENCIES=%d, or start a new round on an empty"
            " storage (make docker-compose-reset, or remove the files of STORAGE_DIR)",
            err.directory,
            err.round_agencies,
            err.agencies,
            err.round_agencies,
            err.round_agencies,
        )
    except (OSError, StorageError, WriteFailed) as err:  # e.g. a new storage on a full disk
        log.error("action: exit | result: fail | error: %s", err)
    return EXIT_START_FAILED


if __name__ == "__main__":
    sys.exit(main())
