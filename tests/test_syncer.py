"""The worker's sync thread (server/lottery/syncer.py), without a server: tickets are done in
order, requests made during a sync share the next one, a failed sync stops every later answer,
and `idle` and `close` wait for the sync that runs. The sync itself is a function the test holds
(a real fdatasync cannot be made to wait); the real one runs in test_handler.py and
test_durability.py."""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator

import pytest

from lottery.durable import SyncFailed
from lottery.syncer import Syncer

WAIT = 5.0  # seconds: far more than any hand-off here takes


class HeldSync:
    """A sync that counts its runs and, while `held`, waits to be released before returning."""

    def __init__(self) -> None:
        self.runs = 0
        self.running = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.error: SyncFailed | None = None

    def hold(self) -> None:
        self.release.clear()

    def __call__(self) -> None:
        self.runs += 1
        self.running.set()
        assert self.release.wait(WAIT), "the test never released the sync"
        self.running.clear()
        if self.error is not None:
            raise self.error


@pytest.fixture
def held() -> HeldSync:
    return HeldSync()


@pytest.fixture
def syncer(held: HeldSync) -> Iterator[Syncer]:
    made = Syncer(held)
    yield made
    held.release.set()
    made.close()


def readable(syncer: Syncer) -> bool:
    return bool(select.select([syncer.fileno()], [], [], WAIT)[0])


def test_a_ticket_is_done_only_once_its_sync_has_returned(syncer: Syncer, held: HeldSync) -> None:
    held.hold()
    ticket = syncer.request()
    assert held.running.wait(WAIT)
    assert syncer.done() < ticket  # running, not returned
    held.release.set()
    assert readable(syncer)
    assert syncer.done() == ticket
    assert not select.select([syncer.fileno()], [], [], 0)[0]  # done() cleared the eventfd


def test_requests_made_during_a_sync_share_the_next_one(syncer: Syncer, held: HeldSync) -> None:
    held.hold()
    first = syncer.request()
    assert held.running.wait(WAIT)
    later = [syncer.request() for _ in range(3)]  # appended while the first sync runs
    assert later == [first + 1, first + 2, first + 3]
    held.release.set()
    syncer.wait(later[-1])
    assert syncer.done() == later[-1]
    assert held.runs == 2  # one for the first ticket, one for the three that came during it


def test_sync_now_returns_after_a_sync_that_started_after_the_call(syncer: Syncer, held: HeldSync) -> None:
    held.hold()
    syncer.request()
    assert held.running.wait(WAIT)  # a sync runs already: it may not cover what came before the call
    returned = threading.Event()
    waiter = threading.Thread(target=lambda: (syncer.sync_now(), returned.set()))
    waiter.start()
    assert not returned.wait(0.2)
    held.release.set()
    waiter.join(WAIT)
    assert returned.is_set() and held.runs == 2


def test_a_failed_sync_fails_every_later_call(syncer: Syncer, held: HeldSync) -> None:
    held.error = SyncFailed("fdatasync of bets.csv: Input/output error")
    ticket = syncer.request()
    assert readable(syncer)
    for call in (syncer.done, lambda: syncer.wait(ticket), syncer.request, syncer.sync_now):
        with pytest.raises(SyncFailed, match="Input/output error"):
            call()
    assert held.runs == 1  # nothing is synced again after a failure: the process stops


def test_idle_and_close_wait_for_the_running_sync(held: HeldSync) -> None:
    syncer = Syncer(held)
    held.hold()
    syncer.request()
    assert held.running.wait(WAIT)
    idle = threading.Event()
    threading.Thread(target=lambda: (syncer.idle(), idle.set()), daemon=True).start()
    assert not idle.wait(0.2)
    syncer.request()  # asked for while closing: still synced before the thread ends
    closer = threading.Thread(target=syncer.close)
    closer.start()
    held.release.set()
    closer.join(WAIT)
    assert not closer.is_alive() and idle.wait(WAIT) and held.runs == 2
