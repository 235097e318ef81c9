"""Storage and draw: exactly-once batches, crash recovery, cross-process group commit, streaming draw."""

from __future__ import annotations

import os
import random
import threading
import zlib
from pathlib import Path

import pytest

from conftest import AgencyBets, batch, bet, chain_of, csv_rows, open_storage, row
from lottery import draw, files, recovery, storage as storage_module
from lottery.board import Board
from lottery.durable import StorageError
from lottery.journal import AgencyState, JournalRecord, JournalView, OlderJournal
from lottery.protocol import Bet, Fin
from lottery.storage import FinOutcome, Outcome, Storage, Verdict

AGENCIES = 9  # the round these tests store into


def outcomes(store: Storage, batches: list[Bet]) -> list[Outcome]:
    return [verdict.outcome for verdict in store.store_batches(batches)]


def test_batches_are_stored_once_in_order(tmp_path: Path) -> None:
    store = open_storage(tmp_path, AGENCIES)
    one, two = AgencyBets(1), AgencyBets(2)
    first = one.batch([bet("10"), bet("11", "7574", first="José", last="Núñez")])
    assert outcomes(store, [first, one.batch([bet("12")]), two.batch([bet("20")])]) == [Outcome.STORED] * 3
    last = one.batches[-1]
    gap = batch(1, 5, [bet("14")], one.chain)
    assert outcomes(store, [last, gap]) == [Outcome.DUPLICATE, Outcome.GAP]
    assert csv_rows(tmp_path) == [
        ["1", "Ana", "López", "10", "1990-01-01", "1"],
        ["1", "José", "Núñez", "11", "1990-01-01", "7574"],
        ["1", "Ana", "López", "12", "1990-01-01", "1"],
        ["2", "Ana", "López", "20", "1990-01-01", "1"],
    ]
    assert store.view.state(1) == AgencyState(3, one.chain, 3)
    assert store.view.state(2) == AgencyState(1, two.chain, 1)


def test_a_verdict_carries_the_state_it_was_decided_against(tmp_path: Path) -> None:
    store = open_storage(tmp_path, AGENCIES)
    agency = AgencyBets(1)
    first, second = agency.batch([bet("1"), bet("2")]), agency.batch([bet("3")])
    verdicts = store.store_batches([first, second, batch(1, 4, [bet("4")], 0xDEADBEEF)])
    assert [v.outcome for v in verdicts] == [Outcome.STORED, Outcome.STORED, Outcome.MISMATCH]
    # Within one call the second batch is decided on top of the first, not on the folded view.
    assert [v.state for v in verdicts] == [AgencyState(), AgencyState(2, first.chain_after, 1),
                                           AgencyState(3, agency.chain, 3)]


def test_the_exactly_once_rules_of_a_batch(tmp_path: Path) -> None:
    store = open_storage(tmp_path, AGENCIES)
    agency = AgencyBets(1)
    bets = [bet(str(n)) for n in range(1, 21)]
    a, b = agency.batch(bets[:5]), agency.batch(bets[5:10])
    assert outcomes(store, [a, b]) == [Outcome.STORED, Outcome.STORED]
    rows = csv_rows(tmp_path)
    refused = {
        "wrong chain at stored+1": batch(1, 11, bets[10:12], agency.chain ^ 1),
        "gap": batch(1, 12, bets[11:12], agency.chain),
        "older batch resent": a,
        "the stored positions cut otherwise": batch(1, 1, bets[:10]),
        "the last positions with other bets": batch(1, 6, [bet("99")] * 5, a.chain_after),
        "the last batch and one more": batch(1, 6, bets[5:11], a.chain_after),
        "the last batch's tail": batch(1, 8, bets[7:10], chain_of(bets[:7])),
    }
    got = outcomes(store, list(refused.values()))
    assert dict(zip(refused, got, strict=True)) == {
        "wrong chain at stored+1": Outcome.MISMATCH,
        "gap": Outcome.GAP,
        "older batch resent": Outcome.MISMATCH,
        "the stored positions cut otherwise": Outcome.MISMATCH,
        "the last positions with other bets": Outcome.MISMATCH,
        "the last batch and one more": Outcome.MISMATCH,
        "the last batch's tail": Outcome.MISMATCH,
    }
    assert csv_rows(tmp_path) == rows  # nothing of them stored
    assert outcomes(store, [b]) == [Outcome.DUPLICATE]
    # Re-cut after what is stored: any batch size continues.
    assert outcomes(store, [agency.batch(bets[10:11]), agency.batch(bets[11:20])]) == [Outcome.STORED] * 2
    assert csv_rows(tmp_path) == [row(1, x) for x in bets]
    assert store.view.state(1) == AgencyState(20, chain_of(bets), 12)


def test_fin_rules(tmp_path: Path) -> None:
    store = open_storage(tmp_path, AGENCIES)
    agency = AgencyBets(3)
    first = agency.batch([bet("30")])
    assert outcomes(store, [first]) == [Outcome.STORED]
    state = AgencyState(1, agency.chain, 1)
    assert store.record_fin(3, 2, agency.chain) == (FinOutcome.GAP, state)  # bet 2 is not stored
    assert store.record_fin(3, 0, 0) == (FinOutcome.GAP, state)
    assert store.record_fin(3, 1, agency.chain ^ 0x80000000) == (FinOutcome.MISMATCH, state)
    assert store.record_fin(3, 1, agency.chain) == (FinOutcome.RECORDED, state)
    assert store.record_fin(3, 1, agency.chain) == (FinOutcome.DUPLICATE, state)
    assert store.record_fin(3, 1, agency.chain ^ 1)[0] is FinOutcome.FINISHED
    assert store.record_fin(3, 2, agency.chain)[0] is FinOutcome.FINISHED
    assert store.view.fins == {3: (1, agency.chain)}
    assert outcomes(store, [first, agency.batch([bet("31")])]) == [Outcome.DUPLICATE, Outcome.FINISHED]
    assert store.record_fin(4, 0, 0) == (FinOutcome.RECORDED, AgencyState())  # an agency with nothing to send
    assert store.resume(3) == (AgencyState(1, first.chain_after, 1), True)
    assert store.resume(4) == (AgencyState(), True)
    assert store.resume(5) == (AgencyState(), False)


def test_one_commit_decides_batches_and_fins_in_order(tmp_path: Path) -> None:
    """A group commit of batches and FINs: a FIN counts the batches before it in the same call,
    a batch after its agency's FIN in the same call is FINISHED, another agency's FIN is its own;
    one append, and a restart finds the same."""
    store = open_storage(tmp_path, AGENCIES)
    one, two = AgencyBets(1), AgencyBets(2)
    first, second = one.batch([bet("1")]), one.batch([bet("2")])
    fin_one = Fin(1, 2, second.chain_after)
    late = one.batch([bet("3")])
    verdicts = store.commit([first, second, fin_one, late, Fin(2, 0, 0), Fin(1, 2, second.chain_after),
                             two.batch([bet("4")])])
    assert [v.outcome for v in verdicts] == [Outcome.STORED, Outcome.STORED, FinOutcome.RECORDED, Outcome.FINISHED,
                                             FinOutcome.RECORDED, FinOutcome.DUPLICATE, Outcome.FINISHED]
    assert verdicts[2].state == AgencyState(2, second.chain_after, 2)  # decided after the batches before it
    assert store.view.fins == {1: (2, second.chain_after), 2: (0, 0)}
    assert [r[3] for r in csv_rows(tmp_path)] == ["1", "2"]
    store.close()
    assert open_storage(tmp_path, AGENCIES).view.fins == {1: (2, second.chain_after), 2: (0, 0)}


def test_state_survives_a_restart(tmp_path: Path) -> None:
    store = open_storage(tmp_path, AGENCIES)
    agency = AgencyBets(1)
    store.store_batches([agency.batch([bet("1")]), agency.batch([bet("2"), bet("3")])])
    store.record_fin(1, 3, agency.chain)
    store.close()
    report = recovery.recover(tmp_path, AGENCIES)
    assert (report.batches, report.fins, report.cut_bets_bytes, report.cut_journal_bytes) == (2, 1, 0, 0)
    again = Storage(tmp_path)
    assert again.view.agency_states == {1: AgencyState(3, agency.chain, 2)}
    assert again.view.fins == {1: (3, agency.chain)}
    assert again.resume(1) == (AgencyState(3, agency.chain, 2), True)
    assert outcomes(again, [agency.batches[-1], agency.batches[0]]) == [Outcome.DUPLICATE, Outcome.MISMATCH]
    assert len(csv_rows(tmp_path)) == 3


def test_a_checkpoint_keeps_what_decides_a_resend(tmp_path: Path) -> None:
    """The checkpoint keeps each agency's stored count, chain and last batch's first: after a
    compaction and a restart the last batch is still acknowledged as a resend, and nothing else."""
    store = open_storage(tmp_path, AGENCIES)
    one, two = AgencyBets(1), AgencyBets(2)
    store.store_batches([one.batch([bet("1"), bet("2")]), one.batch([bet("3"), bet("4"), bet("5")]),
                         two.batch([bet("6")])])
    store.record_fin(2, 1, two.chain)
    store.try_compact()
    journal = (tmp_path / files.JOURNAL_FILE).read_text().splitlines()
    assert journal[0].startswith("checkpoint 9 ")
    assert f"agency 1 5 {one.chain:08x} 3" in journal and f"fin 2 1 {two.chain:08x}" in journal
    store.close()
    recovery.recover(tmp_path, AGENCIES)
    again = Storage(tmp_path)
    assert again.view.state(1) == AgencyState(5, one.chain, 3)
    assert outcomes(again, [one.batches[1], one.batches[0], batch(1, 3, [bet("3"), bet("4"), bet("5")])]) == [
        Outcome.DUPLICATE, Outcome.MISMATCH, Outcome.MISMATCH]
    assert outcomes(again, [one.batch([bet("7")])]) == [Outcome.STORED]
    assert again.record_fin(2, 1, two.chain)[0] is FinOutcome.DUPLICATE
    assert [r[3] for r in csv_rows(tmp_path)] == ["1", "2", "3", "4", "5", "6", "7"]


def test_a_worker_follows_a_checkpoint_only_once_its_running_sync_has_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's storage syncs in its thread. When another process has rewritten the journal
    as a checkpoint, the worker closes its descriptor of the old file only after the sync that
    may be using it has returned (never an fdatasync of a closed, or reused, descriptor)."""
    worker, supervisor = open_storage(tmp_path, AGENCIES), Storage(tmp_path)
    worker.close()
    worker = Storage(tmp_path, background_sync=True)
    started, release = threading.Event(), threading.Event()
    real = storage_module.sync

    def held_in_the_thread(fd: int, what: str) -> None:
        if threading.current_thread().name == "sync":
            started.set()
            assert release.wait(10)
        real(fd, what)

    monkeypatch.setattr(storage_module, "sync", held_in_the_thread)
    one = AgencyBets(1)
    worker.stage([one.batch([bet("1")])])
    ticket = worker.syncer.request()
    assert started.wait(10)
    assert supervisor.try_compact() is not None  # the journal is a new file now
    staged: list[list[Outcome | FinOutcome]] = []
    follower = threading.Thread(target=lambda: staged.append(outcomes_of(worker.stage([one.batch([bet("2")])]))))
    follower.start()
    follower.join(0.3)
    assert follower.is_alive()  # it waits for the running sync before closing the old journal
    release.set()
    follower.join(10)
    assert staged == [[Outcome.STORED]]
    worker.sync()
    assert worker.syncer.done() >= ticket
    worker.close()
    supervisor.close()
    again = Storage(tmp_path)
    assert again.view.state(1).stored == 2 and [r[3] for r in csv_rows(tmp_path)] == ["1", "2"]


def outcomes_of(verdicts: list[Verdict]) -> list[Outcome | FinOutcome]:
    return [verdict.outcome for verdict in verdicts]


@pytest.mark.parametrize(
    "damage, kept_batches",
    [
        ("torn_journal_line", 2),
        ("bets_past_journal", 2),
        ("bets_short_of_journal", 1),
        ("bets_flipped_byte", 1),
        ("bets_other_agency_id", 1),
    ],
)
def test_recovery_keeps_the_longest_valid_prefix(tmp_path: Path, damage: str, kept_batches: int) -> None:
    store = open_storage(tmp_path, AGENCIES)
    agency = AgencyBets(1)
    first, second = agency.batch([bet("1")]), agency.batch([bet("2"), bet("3")])
    store.store_batches([first, second])
    store.close()
    bets_path, journal_path = tmp_path / files.BETS_FILE, tmp_path / files.JOURNAL_FILE
    if damage == "torn_journal_line":
        with open(journal_path, "ab") as journal:
            journal.write(b"batch 1 3 99")
    elif damage == "bets_past_journal":
        with open(bets_path, "ab") as bets:
            bets.write(b"1,Half,Writ")
    elif damage == "bets_short_of_journal":
        os.truncate(bets_path, bets_path.stat().st_size - 3)
    elif damage == "bets_other_agency_id":  # the same length and bet lines, another agency's id
        data = bets_path.read_bytes()
        last = data.rindex(b"\n1,") + 1  # the last line, bet 3: in the second batch
        bets_path.write_bytes(data[:last] + b"7," + data[last + 2 :])
    else:
        data = bytearray(bets_path.read_bytes())
        data[-5] ^= 0x01
        bets_path.write_bytes(bytes(data))
    report = recovery.recover(tmp_path, AGENCIES)
    assert report.batches == kept_batches
    assert report.cut_bets_bytes + report.cut_journal_bytes > 0
    store = Storage(tmp_path)
    kept = first if kept_batches == 1 else second
    assert store.resume(1) == (AgencyState(kept.last, kept.chain_after, kept.first), False)
    assert recovery.recover(tmp_path, AGENCIES).batches == kept_batches  # recovery is idempotent
    rows = csv_rows(tmp_path)
    assert len(rows) == {1: 1, 2: 3}[kept_batches]
    # The agency resends what was lost and the files are whole again.
    expected = Outcome.STORED if kept_batches == 1 else Outcome.DUPLICATE
    assert outcomes(store, [second]) == [expected]
    assert csv_rows(tmp_path) == [row(1, bet("1")), row(1, bet("2")), row(1, bet("3"))]


def test_recovery_refuses_a_journal_of_the_older_format_and_cuts_nothing(tmp_path: Path) -> None:
    """A batch line with a CRC before its chain (the format before 2026-12-05) is not damage: the
    central refuses to start on it, and neither file loses a byte."""
    store = open_storage(tmp_path, AGENCIES)
    store.store_batches([AgencyBets(1).batch([bet("1")])])
    store.close()
    journal_path = tmp_path / files.JOURNAL_FILE
    *head, last = journal_path.read_bytes().splitlines(keepends=True)
    fields = last.split()
    older = b" ".join([*fields[:5], b"%08x" % zlib.crc32((tmp_path / files.BETS_FILE).read_bytes()), fields[5]]) + b"\n"
    journal_path.write_bytes(b"".join(head) + older + older.replace(b"batch 1 1 1", b"batch 1 2 1"))
    before = {name: (tmp_path / name).read_bytes() for name in (files.JOURNAL_FILE, files.BETS_FILE)}
    with pytest.raises(OlderJournal, match="older version"):
        recovery.recover(tmp_path, AGENCIES)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_dead_writers_leftovers_are_cut_by_the_next_writer(tmp_path: Path) -> None:
    store = open_storage(tmp_path, AGENCIES)
    other = Storage(tmp_path)
    store.store_batches([AgencyBets(1).batch([bet("1")])])
    with open(tmp_path / files.BETS_FILE, "ab") as bets:  # a writer killed mid-batch
        bets.write(b"2,Half")
    with open(tmp_path / files.JOURNAL_FILE, "ab") as journal:
        journal.write(b"batch 2 1")
    assert outcomes(other, [AgencyBets(2).batch([bet("2")])]) == [Outcome.STORED]
    assert csv_rows(tmp_path) == [row(1, bet("1")), row(2, bet("2"))]
    assert recovery.recover(tmp_path, AGENCIES).batches == 2


def test_concurrent_writer_processes_never_interleave_or_lose_a_batch(tmp_path: Path) -> None:
    recovery.recover(tmp_path, AGENCIES)
    writers, batches_each, bets_per_batch = 4, 60, 20
    pids = []
    for agency in range(1, writers + 1):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                store = Storage(tmp_path)
                sender = AgencyBets(agency)
                for start in range(1, batches_each + 1, 3):  # groups of up to 3 batches per commit
                    group = [
                        sender.batch([bet(f"{agency}{s:03d}{i:02d}") for i in range(bets_per_batch)])
                        for s in range(start, min(start + 3, batches_each + 1))
                    ]
                    assert outcomes(store, group) == [Outcome.STORED] * len(group)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    report = recovery.recover(tmp_path, AGENCIES)
    assert report.batches == writers * batches_each and report.cut_bets_bytes == 0
    rows = csv_rows(tmp_path)
    assert len(rows) == writers * batches_each * bets_per_batch
    # Each batch's rows are contiguous, and every agency's batches are in position order.
    documents = [r[3] for r in rows]
    for start in range(0, len(documents), bets_per_batch):
        chunk = documents[start : start + bets_per_batch]
        assert [d[-2:] for d in chunk] == [f"{i:02d}" for i in range(bets_per_batch)]
        assert len({d[:-2] for d in chunk}) == 1
    for agency in range(1, writers + 1):
        batches = [int(d[1:4]) for d in documents[::bets_per_batch] if d[0] == str(agency)]
        assert batches == list(range(1, batches_each + 1))
    final = Storage(tmp_path)
    for agency in range(1, writers + 1):
        chain = zlib.crc32(b"".join(lines for lines in _agency_lines(tmp_path, agency)))
        assert final.view.state(agency).stored == batches_each * bets_per_batch
        assert final.view.state(agency).chain == chain


def _agency_lines(directory: Path, agency: int) -> list[bytes]:
    """The bet lines of `agency` in bets.csv, as the agency sent them (its id cut off)."""
    prefix = b"%d," % agency
    return [line[len(prefix) :] + b"\n" for line in (directory / files.BETS_FILE).read_bytes().split(b"\n")[:-1]
            if line.startswith(prefix)]


def test_a_batch_line_holds_the_chain_of_its_bets_which_vouches_for_their_bytes(tmp_path: Path) -> None:
    store = open_storage(tmp_path, AGENCIES)
    agency = AgencyBets(7)
    store.store_batches([agency.batch([bet("70", first="Pérez, Juan"), bet("71")])])
    line = (tmp_path / files.JOURNAL_FILE).read_text().splitlines()[-1].split()
    data = (tmp_path / files.BETS_FILE).read_bytes()
    assert line[:5] == ["batch", "7", "1", "2", str(len(data))] and len(line) == 6
    assert int(line[5], 16) == agency.chain == zlib.crc32(b"".join(_agency_lines(tmp_path, 7)))
    assert data == '7,"Pérez, Juan",López,70,1990-01-01,1\n7,Ana,López,71,1990-01-01,1\n'.encode()
    assert files.bet_lines(7, data) == b"".join(_agency_lines(tmp_path, 7))


@pytest.mark.parametrize("agency", [1, 7, 12, 4294967295])
def test_bets_csv_lines_and_back(agency: int) -> None:
    """csv_parts joined is csv_lines, the agency id before each bet line; bet_lines takes them
    back, and refuses bytes where a line does not start with that id or the last does not end."""
    lines = '"Pérez, Juan",López,70,1990-01-01,1\nAna,B,71,1990-01-01,7574\n1,1,1,2000-02-29,1\n'.encode()
    prefix = b"%d," % agency
    data = files.csv_lines(agency, lines)
    assert data == b"".join(prefix + line + b"\n" for line in lines.split(b"\n")[:-1])
    assert b"".join(files.csv_parts(agency, lines)) == data
    assert files.bet_lines(agency, data) == lines
    one = lines[: lines.index(b"\n") + 1]
    assert files.bet_lines(agency, files.csv_lines(agency, one)) == one
    other = b"%d," % (agency + 1)
    for damaged in (data[:-1], data[1:], other + data[len(prefix) :], data.replace(b"\n" + prefix, b"\n" + other, 1),
                    data.replace(b"\n" + prefix, b"\n", 1), b""):
        assert files.bet_lines(agency, damaged) is None, damaged


def _written_otherwise(line: bytes, rng: random.Random) -> bytes:
    """A batch line with the same values as `line`, written as the central never writes one (a
    leading zero, a sign, upper-case hexadecimal): the fold must take it line by line."""
    fields = line[:-1].split(b" ")
    which = rng.randrange(3)
    if which == 0:
        fields[1] = b"0" + fields[1]
    elif which == 1:
        fields[3] = b"+" + fields[3]
    else:
        fields[5] = fields[5].upper() if fields[5].upper() != fields[5] else b"0" + fields[5]
    return b" ".join(fields) + b"\n"


def test_the_fold_of_batch_lines_is_the_fold_of_their_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """JournalView.fold reads batch lines without building records, runs of them as the central
    writes them in bulk: whatever the lines and wherever the reads cut them, it must end in the
    state that applying every parsed record gives, and refuse what JournalRecord.parse refuses."""
    bulk_rows: list[tuple[bytes, ...]] = []
    fold_run = JournalView._fold_batch_run

    def counted(view: JournalView, rows: list[tuple[bytes, bytes, bytes, bytes, bytes]]) -> None:
        bulk_rows.extend(rows)
        fold_run(view, rows)

    monkeypatch.setattr(JournalView, "_fold_batch_run", counted)
    rng = random.Random(3)
    lines = [JournalRecord("checkpoint", (9, 120, 3)).encode(), JournalRecord("agency", (2, 40, 0xABC, 31)).encode()]
    for _ in range(3000):
        agency = rng.randint(1, 9)
        if rng.random() < 0.05:
            lines.append(JournalRecord("fin", (agency, rng.randint(0, 99), rng.getrandbits(32))).encode())
        else:
            values = (agency, rng.randint(1, 10**6), rng.randint(1, 200), rng.randint(0, 10**9), rng.getrandbits(32))
            line = JournalRecord("batch", values).encode()
            lines.append(_written_otherwise(line, rng) if rng.random() < 0.05 else line)
    data = b"".join(lines) + b"batch 1 2"  # and a torn last line, left for the next fold
    slow = JournalView()
    for line in lines:
        slow.apply(JournalRecord.parse(line[:-1]), len(line))
    fast = JournalView()
    assert fast.fold(data) == len(data) - len(b"batch 1 2")
    assert fast == slow
    batch_lines = sum(line.startswith(b"batch") for line in lines)
    # Both ways were taken: runs of lines as written in bulk, the short ones (a FIN every 20
    # lines or so cuts them) and the lines written otherwise one by one.
    assert 0.8 * batch_lines < len(bulk_rows) < batch_lines
    for _ in range(20):  # read in pieces, as Storage._refresh reads a growing journal
        pieces, carry, position = JournalView(), b"", 0
        while position < len(data):
            step = rng.choice((1, 7, 60, 500, 4096))
            chunk = carry + data[position : position + step]
            position += step
            carry = chunk[pieces.fold(chunk) :]
        assert pieces == slow and carry == b"batch 1 2"
    for damaged in (b"batch 1 2 3 4\n", b"batch 1 2 3 4 5 6 7\n", b"batch 1 -2 3 4 00000005\n",
                    b"batch 1 2 3 4 -0000005\n", b"batch 1 2 3 4 0000000g\n", b"batch x 2 3 4 5\n",
                    b"batc 1 2 3 4 5\n", b"batch 1 2 3 4 00000005 00000006\n"):
        with pytest.raises(StorageError):
            JournalView().fold(damaged)
        with pytest.raises(StorageError):
            JournalRecord.parse(damaged[:-1])
    with pytest.raises(OlderJournal):  # a batch line with a CRC: the format before 2026-12-05
        JournalView().fold(b"batch 1 2 3 4 00000005 00000006\n")
    for damaged in (b"batch 1 2 3 4 5 6", b"batch 1 2 3 4 0000000g 00000006", b"batch 1 2 3 4 00000005 00000006 7"):
        with pytest.raises(StorageError) as refused:  # damage, not the older format
            JournalRecord.parse(damaged)
        assert not isinstance(refused.value, OlderJournal), damaged


def test_a_drawn_round_refuses_new_bets_and_fins_but_acknowledges_the_last_batch(tmp_path: Path) -> None:
    store = open_storage(tmp_path, AGENCIES)
    one, two = AgencyBets(1), AgencyBets(2)
    last = one.batch([bet("1", "7574")])
    assert outcomes(store, [last, two.batch([bet("2")])]) == [Outcome.STORED] * 2
    store.record_fin(1, 1, one.chain)
    draw.run_draw(tmp_path, (tmp_path / files.BETS_FILE).stat().st_size)
    refused = [one.batch([bet("3")]), two.batch([bet("4")]), batch(2, 9, [bet("5")], 0)]
    assert outcomes(store, [last, *refused]) == [Outcome.DUPLICATE] + [Outcome.ROUND_CLOSED] * 3
    assert outcomes(store, [batch(2, 1, [bet("9")])]) == [Outcome.MISMATCH]  # stored positions: not a new bet
    assert store.record_fin(2, 1, two.batches[0].chain_after)[0] is FinOutcome.ROUND_CLOSED
    assert store.record_fin(1, 1, one.batches[0].chain_after)[0] is FinOutcome.DUPLICATE
    assert [r[3] for r in csv_rows(tmp_path)] == ["1", "2"]


# --- the session table (one live session per agency, across workers) ------------------------------


def test_a_new_session_makes_every_older_one_of_the_agency_stale() -> None:
    """The board is shared by fork: a claim in one process makes the older session stale in all."""
    board = Board(3)
    try:
        one = board.claim(1)
        assert board.current(1, one)
        other = board.claim(2)  # another agency's session does not touch agency 1's
        assert board.current(1, one) and board.current(2, other)
        assert board.supersessions() == 0  # first sessions make nothing stale: nobody is told
        child = os.fork()
        if child == 0:  # another worker claims agency 1
            board.claim(1, process=2)
            os._exit(0)
        os.waitpid(child, 0)
        assert not board.current(1, one) and board.current(2, other)
        assert board.supersessions() == 1  # seen by every process: walk the sessions
        newer = board.claim(1)
        assert newer != one and board.current(1, newer)
        assert board.supersessions() == 2
    finally:
        board.close()
    assert not Board(3).current(1, newer)  # a new central: no session outlives the last one


def test_the_count_of_finished_agencies_is_the_count_of_their_fins() -> None:
    """JournalView.finished keeps its count as FINs are folded in (the barrier asks at every look):
    it must be the count of FINs of agencies 1..N, whatever N, with FINs outside the round, a FIN
    recorded again, and a checkpoint that starts the count over."""
    rng = random.Random(11)
    view = JournalView()
    view.apply(JournalRecord("checkpoint", (30, 0, 0)), 20)
    for step in range(400):
        if step % 150 == 149:
            view.apply(JournalRecord("checkpoint", (30, 0, 0)), 20)
        else:
            view.apply(JournalRecord("fin", (rng.choice((0, *range(1, 31), 31, 45)), step, 0)), 20)
        for agencies in (0, 1, 10, 30, 31, 44, 45, 50):
            assert view.finished(agencies) == sum(1 for agency in view.fins if 1 <= agency <= agencies)
