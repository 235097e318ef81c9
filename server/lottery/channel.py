"""The supervisor-worker channel: the listening sockets the workers inherit, the nudges that
travel between the supervisor and each worker, and the exit codes a worker reports with.

A nudge is one byte whose content does not matter; it means "look again". A worker nudges the
supervisor after it records a FIN (the barrier may be complete) and after each handshake (an
older session of the agency may live in another worker); the supervisor passes a worker's nudge
on to every other worker and nudges them all after the draw. Both ends are non-blocking, and a
nudge that finds the channel full is dropped: one is already pending, the facts themselves live
in the storage and the shared board, and both sides re-check them on a tick. So no process ever
waits on another through this channel.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

NUDGE = b"!"

# Exit codes of the central (main.py) and of a worker.
EXIT_OK = 0  # stopped by SIGTERM/SIGINT
EXIT_START_FAILED = 1  # bad configuration or credentials, storage in use or holding another round
EXIT_STORAGE_FAILED = 3  # an fsync failed or the storage cannot be trusted: fail-stop


@dataclass(frozen=True)
class Listeners:
    """The central's listening sockets, created by the supervisor and shared by every worker."""

    agencies: socket.socket  # mutual TLS 1.3
    health: socket.socket  # plaintext, ECHO only

    def close(self) -> None:
        self.agencies.close()
        self.health.close()


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A new (supervisor end, worker end) channel; both ends non-blocking."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent.setblocking(False)
    child.setblocking(False)
    return parent, child


def nudge(channel: socket.socket) -> bool:
    """Send one nudge without blocking; False if the peer is gone. A full channel already holds
    a nudge, so this one is not needed."""
    try:
        channel.send(NUDGE)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        return False
    return True


def drain_nudges(channel: socket.socket) -> bool:
    """Read every pending nudge; False once the peer has closed its end."""
    while True:
        try:
            data = channel.recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
