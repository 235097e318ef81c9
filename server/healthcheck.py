"""Health check of the central, run by Docker inside the server container (the compose file's
`healthcheck`): one ECHO to the plaintext health port, standard library only.

    python3 /app/healthcheck.py [PORT] [HOST]

Sends one version 2 ECHO frame (docs/protocol.md: 02 01 <u32 length> <payload>, a random
payload) to HOST:PORT and exits 0 if the exact same bytes come back within 2 seconds, else 1
with one line on stderr saying why (Docker keeps it in `docker inspect`'s health log). HOST
defaults to 127.0.0.1; PORT to the server's own HEALTH_PORT setting: the environment variable,
else the configuration file the server reads (SERVER_CONFIG, else config.ini beside this
script), else 12346.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import socket
import sys
import time
from pathlib import Path

DEFAULT_PORT = 12346
DEADLINE = 2.0  # seconds for the whole check: connect, send, the whole answer
VERSION, ECHO, ERROR = 2, 1, 8
HEADER_SIZE, MAX_PAYLOAD = 6, 8186


def configured_port() -> int:
    raw = os.environ.get("HEALTH_PORT")
    if raw is None:
        path = Path(os.environ.get("SERVER_CONFIG", Path(__file__).resolve().parent / "config.ini"))
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # type: ignore[assignment, method-assign]  # keys are upper case
        with contextlib.suppress(OSError, configparser.Error, UnicodeDecodeError):  # the server reports a bad file
            parser.read(path, encoding="utf-8")
        raw = parser.defaults().get("HEALTH_PORT", str(DEFAULT_PORT))
    return int(raw.strip())


def check(host: str, port: int) -> str | None:
    """None when the central echoed the frame exactly, else what went wrong (the central's own
    reason when it answered ERROR: it cannot store)."""
    payload = b"health-" + os.urandom(8).hex().encode()
    frame = bytes([VERSION, ECHO]) + len(payload).to_bytes(4, "big") + payload
    deadline = time.monotonic() + DEADLINE
    try:
        with socket.create_connection((host, port), timeout=DEADLINE) as sock:
            sock.sendall(frame)
            head = read_exact(sock, HEADER_SIZE, deadline)
            length = int.from_bytes(head[2:6], "big")
            if length > MAX_PAYLOAD:
                return f"answer header {head.hex()} announces {length} bytes"
            answer = head + read_exact(sock, length, deadline)
    except (OSError, EOFError) as err:  # refused, timed out, reset, closed early
        return f"{host}:{port}: {getattr(err, 'strerror', None) or err}"
    if answer[1] == ERROR and len(answer) >= HEADER_SIZE + 6:
        return f"the central answered ERROR: {answer[HEADER_SIZE + 6 :].decode('utf-8', 'replace')}"
    if answer != frame:
        return f"answer {answer.hex()} is not the frame sent, {frame.hex()}"
    return None


def read_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    """`size` bytes before `deadline`; EOFError if the central closes first, TimeoutError after it."""
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(data)} of {size} bytes within {DEADLINE:g} s")
        sock.settimeout(left)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def main(argv: list[str]) -> int:
    try:
        port = int(argv[1]) if len(argv) > 1 else configured_port()
    except ValueError as err:
        print(f"healthcheck: bad port: {err}", file=sys.stderr)
        return 1
    host = argv[2] if len(argv) > 2 else "127.0.0.1"
    problem = check(host, port)
    if problem:
        print(f"healthcheck: fail: {problem}", file=sys.stderr)
        return 1
    print(f"healthcheck: ECHO answered on {host}:{port}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
