"""Accepting: when a worker takes new connections off the listening sockets it shares with the
others (owns watching the sockets, the pause after `accept` runs out of descriptors or memory,
the stop at shutdown, and least connections first). What follows an accept (the handshake budget,
the TLS handshake, the identity) is admission.py's.

Each worker accepts on the listening sockets it inherited (gunicorn's model), one connection per
loop turn, so the workers share a burst. It stops watching the agencies' port while it has no
room for another session: the rest wait in the kernel's backlog. Running out of descriptors or
memory in `accept` pauses accepting for ACCEPT_PAUSE instead of spinning. The health port is
watched whenever accepting is neither paused nor stopped.

**Least connections first.** Whichever worker is idle when an agency connects would take it, so
a worker that is busy for a moment (a handshake, a sync) loses the next connections to the
other: five agencies often split 4 to 1 over two workers, and the worker with four works alone
at the end. So a worker that holds more connections on the agencies' port than another one (the
shared board's loads) leaves a new connection in the backlog for up to BALANCE_WAIT, for the
lighter worker to take. If it is still there after that (the lighter worker is busy, stopped or
gone), the worker takes it and does not wait again for BALANCE_HOLDOFF: a stuck worker can delay
accepting by BALANCE_WAIT at most once per BALANCE_HOLDOFF, never stop it.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

from .board import Board
from .channel import Listeners
from .config import ServerConfig

log = logging.getLogger(__name__)

ACCEPT_PAUSE = 0.5  # seconds without accepting after accept ran out of descriptors or memory
BALANCE_WAIT = 0.005  # seconds a worker holding more connections than another leaves a new one to it
BALANCE_HOLDOFF = 0.1  # seconds without such waits after one that the lighter worker did not end
# accept errors that concern one connection that vanished: try the next one at once
_TRANSIENT_ACCEPT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})

# What is done with an accepted connection: (socket, address, health port or not).
Admit = Callable[[socket.socket, tuple[str, int], bool], None]


class Selector(Protocol):
    """What accepting asks of the worker's loop."""

    def watch(self, listener: socket.socket, callback: Callable[[int], None]) -> None: ...
    def unwatch(self, listener: socket.socket) -> None: ...


class Accepting:
    def __init__(
        self, index: int, listeners: Listeners, config: ServerConfig, board: Board, selector: Selector,
        admit: Admit, sessions: Callable[[], int],
    ) -> None:  # fmt: skip
        self.index = index
        self.listeners = listeners
        self.config = config
        self.board = board
        self.selector = selector
        self.admit = admit  # admission's: the handshake budget, TLS, a Connection
        self.sessions = sessions  # the worker's authenticated sessions now
        self.watching: set[socket.socket] = set()
        self.paused_until = 0.0
        self.stopped = False
        self.load = 0  # connections on the agencies' port, in their handshake or in session
        self.waiting_until = 0.0  # leaving the agencies' port to a lighter worker until then (0: not)
        self.balance_off_until = 0.0  # no leaving it to a lighter worker until then
        board.set_load(index, 0)  # a new worker in the slot of a dead one holds nothing yet

    def update(self) -> None:
        """Watch the agencies' port while there is room for a session, the health port always;
        neither while accepting is paused or stopped."""
        open_for_all, room = self._open(time.monotonic()), self._room()
        agencies, health = self.listeners.agencies, self.listeners.health
        if open_for_all and room and not self.waiting_until:
            self._watch(agencies, lambda mask: self.accept(agencies, health=False))
        else:
            if agencies in self.watching and not room:
                log.warning(
                    "action: accept | result: in_progress | worker: %d | connections: %d"
                    " | reason: every connection slot is taken, new connections wait in the backlog",
                    self.index,
                    self.sessions(),
                )
            self._unwatch(agencies)
        if open_for_all:
            self._watch(health, lambda mask: self.accept(health, health=True))
        else:
            self._unwatch(health)

    def stop(self) -> None:
        """Accept nothing more (shutdown)."""
        self.stopped = True
        for listener in list(self.watching):
            self._unwatch(listener)

    def released(self) -> None:
        """A connection of the agencies' port this worker held was closed."""
        self._set_load(self.load - 1)

    def wake_at(self, at: float) -> float:
        """The time the loop must wake by: `at`, or sooner if a wait for a lighter worker ends."""
        return min(at, self.waiting_until) if self.waiting_until else at

    def end_wait(self, now: float) -> None:
        """Once a wait for a lighter worker is over: take the connection it left, if it is still
        there, and then wait for none for BALANCE_HOLDOFF; watch the agencies' port again."""
        if not self.waiting_until or now < self.waiting_until:
            return
        self.waiting_until = 0.0
        if self._open(now) and self._room() and self._take(self.listeners.agencies, health=False, waited=True):
            self.balance_off_until = now + BALANCE_HOLDOFF
            log.debug(
                "action: accept | result: in_progress | worker: %d | reason: no lighter worker took the"
                " connection within %gs; taking the next ones at once for %gs",
                self.index,
                BALANCE_WAIT,
                BALANCE_HOLDOFF,
            )
        self.update()

    def accept(self, listener: socket.socket, health: bool) -> None:
        """Accept one connection (the other workers get their turn at the next ones), unless it
        is left to a lighter worker."""
        self._take(listener, health, waited=False)

    def _open(self, now: float) -> bool:
        """Whether accepting is neither stopped nor paused."""
        return not self.stopped and now >= self.paused_until

    def _room(self) -> bool:
        """Whether this worker has room for another session."""
        return self.sessions() < self.config.worker_connections

    def _watch(self, listener: socket.socket, callback: Callable[[int], None]) -> None:
        if listener not in self.watching:
            self.selector.watch(listener, callback)
            self.watching.add(listener)

    def _unwatch(self, listener: socket.socket) -> None:
        if listener in self.watching:
            self.selector.unwatch(listener)
            self.watching.discard(listener)

    def _take(self, listener: socket.socket, health: bool, waited: bool) -> bool:
        """`accept` and admit; whether a connection was accepted. `waited`: it was left to a
        lighter worker already."""
        if not health and not waited and self._leave_to_lighter():
            return False
        accepted = self._accept_one(listener)
        if accepted is None:
            return False
        if not health:
            self._set_load(self.load + 1)
        self.admit(*accepted, health)
        self.update()
        return True

    def _leave_to_lighter(self) -> bool:
        """Whether to leave the waiting connection to a worker that holds fewer (see the module's
        docstring); if so, stop watching the agencies' port for BALANCE_WAIT."""
        now = time.monotonic()
        if now < self.balance_off_until or not self.board.lighter_worker(self.index, self.config.workers):
            return False
        self.waiting_until = now + BALANCE_WAIT
        self.update()
        return True

    def _accept_one(self, listener: socket.socket) -> tuple[socket.socket, tuple[str, int]] | None:
        """`accept`, skipping connections that vanished; None if there is none (or accepting ran
        out of descriptors or memory, and is paused)."""
        while True:
            try:
                sock, address = listener.accept()
                return sock, address
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as err:
                if err.errno in _TRANSIENT_ACCEPT:
                    log.info("action: accept | result: fail | worker: %d | error: %s", self.index, err)
                    continue
                # Out of descriptors or memory: the listener stays readable, so back off instead
                # of spinning; connections wait in the backlog meanwhile.
                log.error(
                    "action: accept | result: fail | worker: %d | error: %s | reason: pausing accept for %gs",
                    self.index,
                    err,
                    ACCEPT_PAUSE,
                )
                self.paused_until = time.monotonic() + ACCEPT_PAUSE
                self.update()
                return None

    def _set_load(self, load: int) -> None:
        self.load = load
        self.board.set_load(self.index, load)
