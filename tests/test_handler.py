"""The central's message handling, message by message, without processes or sockets: the real
handler (server/lottery/handler.py) and group commit over a real storage in a temporary directory,
answers collected by an in-memory outbox."""

from __future__ import annotations

import json
import resource
import select
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, AgencyBets, bet, csv_rows
from lottery import draw, protocol, recovery, storage as storage_module
from lottery.board import Board
from lottery.commit import MAX_GROUPS_IN_FLIGHT, GroupCommit
from lottery.durable import SyncFailed
from lottery.handler import Handler
from lottery.protocol import ErrorCode, MsgType
from lottery.session import Session
from lottery.storage import Storage

VECTORS = json.loads((ROOT / "testdata" / "protocol_vectors.json").read_text(encoding="utf-8"))


@dataclass
class Outbox:
    """What the handler sent, decoded, per session; and which sessions it asked to close."""

    sent: dict[Session, list[bytes]] = field(default_factory=dict)
    closing: set[Session] = field(default_factory=set)

    def send(self, session: Session, frame: bytes) -> None:
        self.sent.setdefault(session, []).append(frame)

    def close_after_send(self, session: Session) -> None:
        session.closing = True
        self.closing.add(session)

    def frames(self, session: Session) -> list[bytes]:
        return self.sent.pop(session, [])

    def messages(self, session: Session) -> list[protocol.Message]:
        return [protocol.decode_payload(frame[1], frame[protocol.HEADER_SIZE :]) for frame in self.frames(session)]


@dataclass
class Central:
    """One worker's handling, as the worker wires it."""

    storage: Storage
    board: Board
    outbox: Outbox
    commit: GroupCommit
    handler: Handler
    directory: Path
    nudges: list[int] = field(default_factory=list)
    problem: list[str] = field(default_factory=list)  # what health_problem answers, if anything
    winners: dict[int, list[str]] | None = None

    def session(self, agency: int | None, health: bool = False) -> Session:
        session = Session(f"peer-{agency}", health=health, agency=agency)
        if agency is not None:
            session.token = self.board.claim(agency)
        return session

    def send(self, session: Session, msg: protocol.Message) -> None:
        frame = protocol.encode(msg)
        self.handler.handle(session, frame[1], frame[protocol.HEADER_SIZE :])


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    recovery.recover(tmp_path, 3)
    board = Board(3)
    storage = Storage(tmp_path, board, 1, background_sync=True)  # as a worker opens it
    outbox = Outbox()
    made = Central(storage, board, outbox, None, None, tmp_path)  # type: ignore[arg-type]
    made.commit = GroupCommit(storage, board, outbox, 1, lambda: made.nudges.append(1))
    made.handler = Handler(storage, made.commit, outbox, lambda: made.winners,
                           lambda: made.problem[0] if made.problem else None, 1)
    yield made
    storage.close()
    board.close()


def test_echo_is_echoed(central: Central) -> None:
    session = central.session(1)
    central.send(session, protocol.Echo(b"ping"))
    assert central.outbox.messages(session) == [protocol.Echo(b"ping")]


def test_a_message_naming_another_agency_gets_the_agency_mismatch_vector(central: Central) -> None:
    """ERROR AGENCY_MISMATCH (code 15) for a message of agency 2's session naming agency 3: the
    vector's exact bytes (the live answer: test_identity.py)."""
    vector = next(v for v in VECTORS["frames"] if v["name"] == "error_agency_mismatch")
    assert vector["fields"]["code"] == ErrorCode.AGENCY_MISMATCH == 15
    session = central.session(2)
    central.send(session, protocol.Hello(3))
    assert [frame.hex() for frame in central.outbox.frames(session)] == [vector["hex"]]
    central.send(session, protocol.Hello(2))  # its own: accepted
    assert central.outbox.messages(session) == [protocol.Resume(2, 0, 0, False)]


def test_a_batch_is_answered_after_the_group_commit_and_before_any_later_answer(central: Central) -> None:
    session, bets = central.session(1), AgencyBets(1)
    central.send(session, bets.batch([bet("1"), bet("2")]))
    assert central.outbox.frames(session) == [] and session.pending == 1  # kept for this turn's commit
    central.send(session, protocol.Echo(b"after"))  # an answer commits the session's batches first
    assert central.outbox.messages(session) == [protocol.Ack(1, 2), protocol.Echo(b"after")]
    assert session.pending == 0 and [r[3] for r in csv_rows(central.directory)] == ["1", "2"]
    central.send(session, protocol.Hello(1))
    assert central.outbox.messages(session) == [protocol.Resume(1, 2, bets.chain, False)]


def test_a_batch_of_a_closed_or_superseded_session_is_not_stored(central: Central) -> None:
    """The storage asks, under its lock, whether each batch's session is still live."""
    closed, superseded, live = central.session(1), central.session(2), central.session(3)
    one, two, three = AgencyBets(1), AgencyBets(2), AgencyBets(3)
    central.send(closed, one.batch([bet("1")]))
    central.send(superseded, two.batch([bet("2")]))
    central.send(live, three.batch([bet("3")]))
    closed.open = False  # its connection ended before the turn's commit
    newer = central.session(2)  # agency 2 connected again, in any worker
    central.commit.run()
    assert central.outbox.frames(closed) == [] and central.outbox.frames(superseded) == []
    assert central.outbox.messages(live) == [protocol.Ack(3, 1)]
    assert [r[3] for r in csv_rows(central.directory)] == ["3"]
    central.send(newer, protocol.Hello(2))  # the newer session resumes from nothing stored
    assert central.outbox.messages(newer) == [protocol.Resume(2, 0, 0, False)]


def test_refused_batches_name_the_facts(central: Central) -> None:
    session, bets = central.session(1), AgencyBets(1)
    first = bets.batch([bet("1")])
    gap = AgencyBets(1, 5, 0).batch([bet("9")])
    central.send(session, first)
    central.send(session, gap)
    central.send(session, first)  # a resend of the last stored batch: acknowledged again
    central.commit.run()
    ack, refused, again = central.outbox.messages(session)
    assert ack == protocol.Ack(1, 1) and again == protocol.Ack(1, 1)
    assert isinstance(refused, protocol.Error) and refused.code is ErrorCode.SEQUENCE_GAP and refused.position == 6
    assert "only bets 1..1 are stored" in refused.reason


def test_an_invalid_batch_or_an_unknown_type_is_refused_and_nothing_is_stored(central: Central) -> None:
    session = central.session(1)
    bad = protocol.encode(protocol.Bet(1, 1, 1, 0, b"Ana,Lopez,1,1990-02-30,7\n"))
    central.handler.handle(session, MsgType.BET, bad[protocol.HEADER_SIZE :])
    central.handler.handle(session, MsgType.ACK, b"\0" * 8)  # a central's message, not an agency's
    invalid, unknown = central.outbox.messages(session)
    assert isinstance(invalid, protocol.Error) and invalid.code is ErrorCode.INVALID_BET and invalid.position == 1
    assert isinstance(unknown, protocol.Error) and unknown.code is ErrorCode.UNKNOWN_TYPE
    assert session not in central.outbox.closing and csv_rows(central.directory) == []


def test_fin_is_recorded_once_and_nudges_the_supervisor(central: Central) -> None:
    """A FIN is answered after the turn's group commit, in order with the session's batches, and
    decided against them; the turn's FINs share its one sync and nudge the supervisor once."""
    session, bets = central.session(1), AgencyBets(1)
    central.send(session, bets.batch([bet("1")]))
    central.send(session, protocol.Fin(1, 2, bets.chain))  # announces a bet not stored
    fin = bets.fin()
    central.send(session, fin)
    central.send(session, fin)
    assert central.outbox.frames(session) == [] and central.nudges == []  # nothing before the commit
    syncs = []
    sync = central.storage.sync
    central.storage.sync = lambda: (syncs.append(1), sync())[1]  # type: ignore[method-assign]
    central.commit.run()
    ack, gap, fin_ack, duplicate = central.outbox.messages(session)
    assert ack == protocol.Ack(1, 1) and fin_ack == protocol.FinAck(1)
    assert isinstance(gap, protocol.Error) and gap.code is ErrorCode.SEQUENCE_GAP
    assert isinstance(duplicate, protocol.Error) and duplicate.code is ErrorCode.DUPLICATE_FIN
    assert len(syncs) == 1 and len(central.nudges) == 1  # one sync, one nudge for the turn
    assert central.storage.view.fins == {1: (1, bets.chain)}
    central.send(session, bets.batch([bet("2")]))
    central.commit.run()
    (finished,) = central.outbox.messages(session)
    assert isinstance(finished, protocol.Error) and finished.code is ErrorCode.AGENCY_FINISHED
    central.send(session, fin)  # a retry alone in its turn: DUPLICATE_FIN, and a nudge
    central.commit.run()
    (again,) = central.outbox.messages(session)
    assert isinstance(again, protocol.Error) and again.code is ErrorCode.DUPLICATE_FIN and len(central.nudges) == 2


def test_a_fin_of_a_closed_session_is_not_recorded(central: Central) -> None:
    """As a batch: a FIN whose connection ended before the turn's commit is not recorded and not
    answered; the agency sends it again on its next connection."""
    session, bets = central.session(1), AgencyBets(1)
    central.send(session, bets.batch([bet("1")]))
    central.commit.run()
    central.outbox.messages(session)
    central.send(session, bets.fin())
    session.open = False
    central.commit.run()
    assert central.outbox.frames(session) == [] and central.storage.view.fins == {} and central.nudges == []
    again = central.session(1)
    central.send(again, bets.fin())
    central.commit.run()
    assert central.outbox.messages(again) == [protocol.FinAck(1)] and central.storage.view.fins == {1: (1, bets.chain)}


def test_a_winners_query_is_held_until_the_draw_and_then_answered_with_own_winners_only(central: Central) -> None:
    one, two = central.session(1), central.session(2)
    central.send(one, protocol.WinnersQuery(1))
    assert central.outbox.frames(one) == [] and one.held == 1
    assert not central.handler.release_held(one)  # not drawn yet
    central.winners = {1: ["111", "112"], 2: ["221"]}
    assert central.handler.release_held(one) and one.held is None
    assert central.outbox.messages(one) == [protocol.Winners(1, True, ("111", "112"))]
    central.send(two, protocol.WinnersQuery(2))  # after the draw: answered at once
    assert central.outbox.messages(two) == [protocol.Winners(2, True, ("221",))]


def test_the_health_port_echoes_only_while_the_central_can_store(central: Central) -> None:
    health = central.session(None, health=True)
    central.send(health, protocol.Echo(b"ok?"))
    assert central.outbox.messages(health) == [protocol.Echo(b"ok?")] and health not in central.outbox.closing
    central.problem.append("the storage has 0 bytes free (a full disk)")
    central.send(health, protocol.Echo(b"ok?"))
    (refused,) = central.outbox.messages(health)
    assert isinstance(refused, protocol.Error) and refused.code is ErrorCode.INTERNAL_ERROR
    assert refused.reason == "cannot store: the storage has 0 bytes free (a full disk)"
    other = central.session(None, health=True)
    central.send(other, protocol.Hello(1))  # anything but ECHO: refused and closed
    (unknown,) = central.outbox.messages(other)
    assert isinstance(unknown, protocol.Error) and unknown.code is ErrorCode.UNKNOWN_TYPE
    assert other in central.outbox.closing


def test_a_failed_append_is_refused_with_its_cause_and_nothing_else_changes(central: Central) -> None:
    """A real failed write: the file size limit (EFBIG, as a full disk gives ENOSPC)."""
    session, bets = central.session(1), AgencyBets(1)
    central.send(session, bets.batch([bet("1")]))
    central.commit.run()
    assert central.outbox.messages(session) == [protocol.Ack(1, 1)]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, limit[1]))  # the journal is past 64 bytes already
    try:
        central.send(session, bets.batch([bet(str(n)) for n in range(2, 40)]))
        central.commit.run()
        (refused,) = central.outbox.messages(session)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert isinstance(refused, protocol.Error) and refused.code is ErrorCode.INTERNAL_ERROR and refused.position == 2
    assert refused.reason.startswith("storage failure: append: ")
    assert session in central.outbox.closing
    assert [r[3] for r in csv_rows(central.directory)] == ["1"]  # nothing of the refused batch
    again = central.session(1)  # the agency comes back: stored once the cause is gone
    central.send(again, bets.batches[1])
    central.commit.run()
    assert central.outbox.messages(again) == [protocol.Ack(1, 39)]
    assert len(csv_rows(central.directory)) == 39
    assert not draw.draw_done(central.directory)


# --- the group commit and the sync thread ------------------------------------------------------


@pytest.fixture
def held_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The storage's fdatasyncs wait until the test sets `release`; `started` says one waits."""
    started, release = threading.Event(), threading.Event()
    real = storage_module.sync

    def held(fd: int, what: str) -> None:
        started.set()
        assert release.wait(10), "the test never released the sync"
        real(fd, what)

    monkeypatch.setattr(storage_module, "sync", held)
    yield started, release
    release.set()


def answer_synced_groups(central: Central, session: Session) -> None:
    """What the worker's loop does when the sync thread's eventfd turns readable, until `session`
    has every answer."""
    while session.pending:
        assert select.select([central.storage.syncer], [], [], 10)[0], "no sync returned"
        central.commit.on_synced()


def a_group_syncing(central: Central, started: threading.Event) -> tuple[Session, AgencyBets]:
    """Agency 1's first batch appended by a turn's end, its sync running in the thread (held)."""
    session, bets = central.session(1), AgencyBets(1)
    central.send(session, bets.batch([bet("1")]))
    central.commit.start()
    assert started.wait(10)
    return session, bets


def test_the_loop_reads_on_while_a_group_syncs_and_answers_it_only_once_synced(
    central: Central, held_sync: tuple[threading.Event, threading.Event]
) -> None:
    started, release = held_sync
    session, bets = a_group_syncing(central, started)
    central.send(session, bets.batch([bet("2")]))  # read and checked while the first group syncs
    central.commit.start()  # appended too; its sync follows
    central.commit.on_synced()  # nothing has returned yet
    assert central.outbox.frames(session) == [] and session.pending == 2
    assert [r[3] for r in csv_rows(central.directory)] == ["1", "2"]  # appended, not yet answered
    release.set()
    answer_synced_groups(central, session)
    assert central.outbox.messages(session) == [protocol.Ack(1, 1), protocol.Ack(1, 2)]


def test_a_turn_waits_while_the_most_groups_allowed_are_in_flight(
    central: Central, held_sync: tuple[threading.Event, threading.Event]
) -> None:
    """With the disk slow or hung, a worker holds at most MAX_GROUPS_IN_FLIGHT groups: the turn
    that would append one more waits for the oldest, as the loop did before the sync thread."""
    started, release = held_sync
    session, bets = a_group_syncing(central, started)
    for number in range(2, MAX_GROUPS_IN_FLIGHT + 1):
        central.send(session, bets.batch([bet(str(number))]))
        central.commit.start()
    assert len(central.commit.in_flight) == MAX_GROUPS_IN_FLIGHT
    central.send(session, bets.batch([bet(str(MAX_GROUPS_IN_FLIGHT + 1))]))
    turn = threading.Thread(target=central.commit.start)
    turn.start()
    turn.join(0.3)
    assert turn.is_alive()  # waiting for the oldest group's sync
    assert central.outbox.frames(session) == []
    release.set()
    turn.join(10)
    answer_synced_groups(central, session)
    last = MAX_GROUPS_IN_FLIGHT + 1
    assert central.outbox.messages(session) == [protocol.Ack(1, n) for n in range(1, last + 1)]


def test_an_answer_behind_a_group_in_flight_waits_for_its_sync(
    central: Central, held_sync: tuple[threading.Event, threading.Event]
) -> None:
    """An echo after a batch whose sync is running: `run` waits for it, the ACK goes first."""
    started, release = held_sync
    session, _ = a_group_syncing(central, started)
    releaser = threading.Timer(0.2, release.set)
    releaser.start()
    central.send(session, protocol.Echo(b"after"))  # returns only once the batch is durable
    releaser.join()
    assert central.outbox.messages(session) == [protocol.Ack(1, 1), protocol.Echo(b"after")]
    assert session.pending == 0


def test_a_failed_sync_in_the_thread_answers_nothing_it_covered(
    central: Central, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int, what: str) -> None:
        raise SyncFailed(f"fdatasync of {what}: Input/output error")

    monkeypatch.setattr(storage_module, "sync", failing)
    session, bets = central.session(1), AgencyBets(1)
    central.send(session, bets.batch([bet("1")]))
    central.commit.start()
    assert select.select([central.storage.syncer], [], [], 10)[0]
    with pytest.raises(SyncFailed, match="Input/output error"):
        central.commit.on_synced()  # the worker's loop ends on it: fail-stop
    with pytest.raises(SyncFailed):
        central.send(session, protocol.Echo(b"after"))  # nothing may follow it either
    assert central.outbox.frames(session) == []
