"""The shared board: the little state the central's processes share in memory, none of it durable.

One anonymous shared mapping (``mmap(-1, ...)``, MAP_SHARED), created by the supervisor before it
forks any worker and inherited by every one, holds four tables of 64-bit words:

- **Sessions.** One word per agency: the token of its newest session. A worker that authenticates
  agency N writes a token unique to that session (its pid and a counter); every older session of
  N, in whichever worker, sees that the word is no longer its own token and closes. The last
  writer wins, so of two simultaneous sessions exactly one survives.
- **Supersessions.** One counter per process: how many sessions its claims made stale (a claim
  over a word that already held a token). Only their sum matters: while it stays the same, no
  session anywhere went stale, so a worker need not walk its sessions on every nudge (with 1,000
  agencies connecting, that walk was O(sessions) per nudge). A first session of an agency, the
  common case, supersedes nothing and tells nobody.
- **Loads.** One word per worker: how many connections on the agencies' port it holds (in their
  handshake or in session). A worker holding more than another one leaves a new connection to
  it for a moment (accepting.py), so that the agencies, and the work, spread evenly. Only the
  worker itself writes its word; a stale word (a stopped worker) can only cost that moment.
- **The append lock's holders.** One word per process (0 the supervisor, 1..W the workers): when
  it began waiting for the append lock, then when it got it (storage.AppendLock writes them). The
  supervisor reads them to find a process that has held the lock too long (a stopped or hung
  worker) and kill it; a worker answering a health check reads them to report the central unable
  to store meanwhile.

Each word is read and written whole: an aligned 8-byte load or store, so no reader ever sees half
of one, and no lock is needed (none could be: the board exists to survive a process that stops
while holding one). Nothing here touches the disk, so a full disk cannot stop a handshake; the
board starts zeroed with every central, as sessions and lock holders do not outlive it.
"""

from __future__ import annotations

import itertools
import mmap
import os
import time

_WORD = 8
MAX_PROCESSES = 257  # the supervisor and up to 256 workers (config.WORKERS)
_SUPERSESSIONS = MAX_PROCESSES  # the first word of the supersession counters
_LOADS = 2 * MAX_PROCESSES  # the first word of the workers' loads
_SESSIONS = 3 * MAX_PROCESSES  # the first word of the sessions' tokens


def now_ms() -> int:
    """Milliseconds of CLOCK_MONOTONIC: the same clock in every process of the machine."""
    return time.monotonic_ns() // 1_000_000


class Board:
    """The shared mapping and its tables; a process holds the same Board after fork."""

    def __init__(self, agencies: int) -> None:
        self.agencies = agencies
        self._map = mmap.mmap(-1, _WORD * (_SESSIONS + agencies))
        self._words = memoryview(self._map).cast("Q")
        self._tokens = itertools.count(1)

    def close(self) -> None:
        self._words.release()
        self._map.close()

    # --- sessions -----------------------------------------------------------------------------

    def claim(self, agency: int, process: int = 0) -> int:
        """A new session of `agency`, claimed by `process`: its token, which makes every older
        session of it stale. If there was one, `supersessions()` grows."""
        token = (os.getpid() << 32) | (next(self._tokens) & 0xFFFFFFFF)
        word = _SESSIONS + agency - 1
        superseding = self._words[word] != 0
        self._words[word] = token
        if superseding:  # after the token: whoever sees the new count also sees the new token
            self._words[_SUPERSESSIONS + process] += 1
        return token

    def current(self, agency: int, token: int) -> bool:
        """Whether the session of `agency` with `token` is still its newest."""
        return self._words[_SESSIONS + agency - 1] == token

    def supersessions(self) -> int:
        """How many sessions claims have made stale so far, in every process together."""
        return sum(self._words[_SUPERSESSIONS:_LOADS])

    # --- loads --------------------------------------------------------------------------------

    def set_load(self, worker: int, connections: int) -> None:
        """`worker` (1..W) now holds `connections` connections on the agencies' port."""
        self._words[_LOADS + worker] = connections

    def lighter_worker(self, worker: int, workers: int) -> bool:
        """Whether one of the other workers of 1..`workers` holds fewer connections than `worker`."""
        loads = self._words[_LOADS + 1 : _LOADS + workers + 1]
        return min(loads) < loads[worker - 1]

    # --- the append lock ----------------------------------------------------------------------
    # A process's word: 0 when it neither holds nor waits for the lock, else
    # (milliseconds since it began waiting, or since it got the lock) * 2 + (1 if holding).

    def lock_waiting(self, process: int) -> None:
        self._words[process] = now_ms() << 1

    def lock_held(self, process: int) -> None:
        self._words[process] = (now_ms() << 1) | 1

    def lock_released(self, process: int) -> None:
        self._words[process] = 0

    def lock_since(self, process: int) -> int | None:
        """Since when (now_ms) `process` has held the lock; None if its row says it does not (it
        may hold it all the same for an instant: after taking it, before writing its row)."""
        word = self._words[process]
        return word >> 1 if word & 1 else None

    def oldest_claim(self) -> tuple[int, int] | None:
        """(process, since) of the process that has waited for or held the lock the longest, if
        any does: a store in progress since then."""
        claims = [(word >> 1, process) for process, word in enumerate(self._words[:MAX_PROCESSES]) if word]
        if not claims:
            return None
        since, process = min(claims)
        return process, since
