"""Server configuration: config.ini's [DEFAULT] section, each key overridable by the environment.

Every key is required (config.ini ships them all) and checked here, so a bad value stops the
server at start with one error that names the key.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration value is missing or invalid; `key` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ServerConfig:
    port: int
    ip: str
    listen_backlog: int
    logging_level: str
    agencies: int
    storage_dir: Path
    workers: int
    worker_connections: int
    idle_timeout: float
    shutdown_timeout: float
    stall_timeout: float
    status_interval: float
    health_port: int
    handshake_timeout: float
    handshake_budget: int
    tls_ca: Path
    tls_cert: Path
    tls_key: Path

    def log_fields(self) -> str:
        return (
            f"port: {self.port} | listen_backlog: {self.listen_backlog} | "
            f"logging_level: {self.logging_level} | ip: {self.ip} | agencies: {self.agencies} | "
            f"storage_dir: {self.storage_dir} | workers: {self.workers} | "
            f"worker_connections: {self.worker_connections} | idle_timeout: {self.idle_timeout:g} | "
            f"shutdown_timeout: {self.shutdown_timeout:g} | health_port: {self.health_port} | "
            f"handshake_timeout: {self.handshake_timeout:g} | handshake_budget: {self.handshake_budget} | "
            f"stall_timeout: {self.stall_timeout:g} | status_interval: {self.status_interval:g} | "
            f"tls_ca: {self.tls_ca} | tls_cert: {self.tls_cert} | tls_key: {self.tls_key}"
        )


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise ValueError(f"{value:g} is outside (0, 86400] seconds")
    return value


def _stall_seconds(raw: str) -> float:
    """STALL_TIMEOUT: at least a second (the supervisor looks every half second, and a long fold of
    the journal holds the append lock for milliseconds: less would kill healthy workers)."""
    value = _seconds(raw)
    if value < 1:
        raise ValueError(f"{value:g} is under 1 second")
    return value


def _seconds_or_off(raw: str) -> float:
    """Seconds, or 0 for off."""
    if raw.strip() in ("0", "0.0"):
        return 0.0
    return _seconds(raw)


def _ip(raw: str) -> str:
    if raw in ("", "0.0.0.0", "localhost"):
        return raw
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not an IP address") from None
    return raw


def _level(raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{raw!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _path(raw: str) -> Path:
    if not raw:
        raise ValueError("empty path")
    return Path(raw)


def load(path: Path, environ: Mapping[str, str] = os.environ) -> ServerConfig:
    """Read `path`, apply environment overrides, validate; raises ConfigError."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # keep the keys' upper case
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as err:
        raise ConfigError("config_file", f"cannot read {path}: {err.strerror}") from err
    except configparser.Error as err:
        raise ConfigError("config_file", f"cannot parse {path}: {err}") from err
    section = parser["DEFAULT"]

    def get(key: str, parse: Callable[[str], T]) -> T:
        raw = environ.get(key, section.get(key))
        if raw is None:
            raise ConfigError(key, "missing")
        try:
            return parse(raw.strip())
        except ValueError as err:
            raise ConfigError(key, str(err)) from None

    workers = get("WORKERS", _integer(0, 256)) or (os.cpu_count() or 1)
    agencies = get("AGENCIES", _integer(1, 1_000_000))
    worker_connections = get("WORKER_CONNECTIONS", _integer(1, 10_000))
    if workers * worker_connections < agencies:
        # Agencies keep their connection until the draw, and the draw waits for every agency:
        # with fewer slots than agencies the last ones would wait in the backlog forever.
        raise ConfigError(
            "WORKER_CONNECTIONS",
            f"{workers} workers x {worker_connections} connections is fewer than the {agencies} agencies",
        )
    port = get("SERVER_PORT", _integer(1, 65535))
    health_port = get("HEALTH_PORT", _integer(1, 65535))
    if health_port == port:
        raise ConfigError("HEALTH_PORT", f"{health_port} is also SERVER_PORT")
    return ServerConfig(
        port=port,
        ip=get("SERVER_IP", _ip),
        listen_backlog=get("SERVER_LISTEN_BACKLOG", _integer(1, 65535)),
        logging_level=get("LOGGING_LEVEL", _level),
        agencies=agencies,
        storage_dir=get("STORAGE_DIR", _path),
        workers=workers,
        worker_connections=worker_connections,
        idle_timeout=get("IDLE_TIMEOUT", _seconds),
        shutdown_timeout=get("SHUTDOWN_TIMEOUT", _seconds),
        stall_timeout=get("STALL_TIMEOUT", _stall_seconds),
        status_interval=get("STATUS_INTERVAL", _seconds_or_off),
        health_port=health_port,
        handshake_timeout=get("HANDSHAKE_TIMEOUT", _seconds),
        handshake_budget=get("HANDSHAKE_BUDGET", _integer(1, 100_000)),
        tls_ca=get("TLS_CA", _path),
        tls_cert=get("TLS_CERT", _path),
        tls_key=get("TLS_KEY", _path),
    )
