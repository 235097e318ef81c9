"""Storage and draw: idempotent batches, crash recovery, cross-process group commit, streaming draw."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from conftest import batch, bet
from lottery import draw, storage
from lottery.storage import FinOutcome, Outcome, Storage

AGENCIES = 9  # the round these tests store into


def open_storage(directory: Path) -> Storage:
    storage.recover(directory, AGENCIES)
    return Storage(directory)


def csv_rows(directory: Path) -> list[str]:
    return (directory / storage.BETS_FILE).read_text(encoding="utf-8").splitlines()


def test_batches_are_stored_once_in_order(tmp_path: Path) -> None:
    store = open_storage(tmp_path)
    first = batch(1, 1, [bet("10"), bet("11", "7574", first="José", last="Núñez")])
    outcomes = store.store_batches([first, batch(1, 2, [bet("12")]), batch(2, 1, [bet("20")])])
    assert outcomes == [Outcome.STORED] * 3
    assert store.store_batches([first, batch(1, 4, [bet("14")])]) == [Outcome.DUPLICATE, Outcome.GAP]
    assert csv_rows(tmp_path) == [
        "1,Ana,López,10,1990-01-01,1",
        "1,José,Núñez,11,1990-01-01,7574",
        "1,Ana,López,12,1990-01-01,1",
        "2,Ana,López,20,1990-01-01,1",
    ]


def test_a_batch_after_fin_is_refused_but_a_resend_is_acknowledged(tmp_path: Path) -> None:
    store = open_storage(tmp_path)
    first = batch(3, 1, [bet("30")])
    assert store.store_batches([first]) == [Outcome.STORED]
    assert store.record_fin(3, 2) is FinOutcome.GAP  # batch 2 is not stored
    assert store.record_fin(3, 1) is FinOutcome.RECORDED
    assert store.record_fin(3, 1) is FinOutcome.DUPLICATE
    assert store.store_batches([first, batch(3, 2, [bet("31")])]) == [Outcome.DUPLICATE, Outcome.FINISHED]
    assert store.record_fin(4, 0) is FinOutcome.RECORDED  # an agency with nothing to send


def test_state_survives_a_restart(tmp_path: Path) -> None:
    store = open_storage(tmp_path)
    store.store_batches([batch(1, 1, [bet("1")]), batch(1, 2, [bet("2")])])
    store.record_fin(1, 2)
    store.close()
    report = storage.recover(tmp_path, AGENCIES)
    assert (report.batches, report.fins, report.cut_bets_bytes, report.cut_journal_bytes) == (2, 1, 0, 0)
    again = Storage(tmp_path)
    assert again.view.last_seq == {1: 2} and again.view.fins == {1: 2}
    assert again.store_batches([batch(1, 2, [bet("2")])]) == [Outcome.DUPLICATE]
    assert len(csv_rows(tmp_path)) == 2


@pytest.mark.parametrize(
    "damage, kept_batches",
    [
        ("torn_journal_line", 2),
        ("bets_past_journal", 2),
        ("bets_short_of_journal", 1),
        ("bets_flipped_byte", 1),
    ],
)
def test_recovery_keeps_the_longest_valid_prefix(tmp_path: Path, damage: str, kept_batches: int) -> None:
    store = open_storage(tmp_path)
    store.store_batches([batch(1, 1, [bet("1")]), batch(1, 2, [bet("2"), bet("3")])])
    store.close()
    bets_path, journal_path = tmp_path / storage.BETS_FILE, tmp_path / storage.JOURNAL_FILE
    if damage == "torn_journal_line":
        with open(journal_path, "ab") as journal:
            journal.write(b"batch 1 3 99")
    elif damage == "bets_past_journal":
        with open(bets_path, "ab") as bets:
            bets.write(b"1,Half,Writ")
    elif damage == "bets_short_of_journal":
        os.truncate(bets_path, bets_path.stat().st_size - 3)
    else:
        data = bytearray(bets_path.read_bytes())
        data[-5] ^= 0x01
        bets_path.write_bytes(bytes(data))
    report = storage.recover(tmp_path, AGENCIES)
    assert report.batches == kept_batches
    assert report.cut_bets_bytes + report.cut_journal_bytes > 0
    store = Storage(tmp_path)
    assert store.view.last_seq == {1: kept_batches}
    assert storage.recover(tmp_path, AGENCIES).batches == kept_batches  # recovery is idempotent
    rows = csv_rows(tmp_path)
    assert len(rows) == {1: 1, 2: 3}[kept_batches]
    # The agency resends what was lost and the files are whole again.
    assert store.store_batches([batch(1, 2, [bet("2"), bet("3")])])[0] in (Outcome.STORED, Outcome.DUPLICATE)
    assert csv_rows(tmp_path)[-2:] == ["1,Ana,López,2,1990-01-01,1", "1,Ana,López,3,1990-01-01,1"]


def test_a_dead_writers_leftovers_are_cut_by_the_next_writer(tmp_path: Path) -> None:
    store = open_storage(tmp_path)
    other = Storage(tmp_path)
    store.store_batches([batch(1, 1, [bet("1")])])
    with open(tmp_path / storage.BETS_FILE, "ab") as bets:  # a writer killed mid-batch
        bets.write(b"2,Half")
    with open(tmp_path / storage.JOURNAL_FILE, "ab") as journal:
        journal.write(b"batch 2 1")
    assert other.store_batches([batch(2, 1, [bet("2")])]) == [Outcome.STORED]
    assert csv_rows(tmp_path) == ["1,Ana,López,1,1990-01-01,1", "2,Ana,López,2,1990-01-01,1"]
    assert storage.recover(tmp_path, AGENCIES).batches == 2


def test_concurrent_writer_processes_never_interleave_or_lose_a_batch(tmp_path: Path) -> None:
    storage.recover(tmp_path, AGENCIES)
    writers, batches_each, bets_per_batch = 4, 60, 20
    pids = []
    for agency in range(1, writers + 1):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                store = Storage(tmp_path)
                for seq in range(1, batches_each + 1, 3):  # groups of up to 3 batches per commit
                    group = [
                        batch(agency, s, [bet(f"{agency}{s:03d}{i:02d}") for i in range(bets_per_batch)])
                        for s in range(seq, min(seq + 3, batches_each + 1))
                    ]
                    assert store.store_batches(group) == [Outcome.STORED] * len(group)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    report = storage.recover(tmp_path, AGENCIES)
    assert report.batches == writers * batches_each and report.cut_bets_bytes == 0
    rows = csv_rows(tmp_path)
    assert len(rows) == writers * batches_each * bets_per_batch
    # Each batch's rows are contiguous, and every agency's batches are in seq order.
    documents = [row.split(",")[3] for row in rows]
    for start in range(0, len(documents), bets_per_batch):
        chunk = documents[start : start + bets_per_batch]
        assert [d[-2:] for d in chunk] == [f"{i:02d}" for i in range(bets_per_batch)]
        assert len({d[:-2] for d in chunk}) == 1
    for agency in range(1, writers + 1):
        seqs = [int(d[1:4]) for d in documents[::bets_per_batch] if d[0] == str(agency)]
        assert seqs == list(range(1, batches_each + 1))


def test_journal_crc_covers_the_batch_bytes(tmp_path: Path) -> None:
    store = open_storage(tmp_path)
    store.store_batches([batch(7, 1, [bet("70")])])
    line = (tmp_path / storage.JOURNAL_FILE).read_text().splitlines()[-1].split()
    data = (tmp_path / storage.BETS_FILE).read_bytes()
    assert line[:4] == ["batch", "7", "1", str(len(data))]
    assert int(line[4], 16) == zlib.crc32(data)


def test_draw_streams_and_finds_exactly_the_winners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draw, "CHUNK_SIZE", 64)  # many chunk boundaries inside lines
    store = open_storage(tmp_path)
    bets = [bet(f"{n}", "7574" if n % 7 == 0 else str(n)) for n in range(1, 200)]
    bets += [bet("900", "07574"), bet("901", "75740"), bet("902", "17574")]
    store.store_batches([batch(1, 1, bets[:100]), batch(2, 1, bets[100:])])
    size = (tmp_path / storage.BETS_FILE).stat().st_size
    winners = draw.find_winners(tmp_path / storage.BETS_FILE, size)
    expected = [(1 if n <= 100 else 2, str(n)) for n in range(1, 200) if n % 7 == 0] + [(2, "900")]
    assert winners == expected
    assert not draw.draw_done(tmp_path)
    assert draw.run_draw(tmp_path, size) == len(expected)
    assert draw.draw_done(tmp_path)
    result = draw.load_winners(tmp_path)
    assert result[1] == [d for a, d in expected if a == 1]
    assert result[2] == [d for a, d in expected if a == 2]
