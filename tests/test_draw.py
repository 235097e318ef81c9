"""The draw (server/lottery/draw.py) and the barrier's scan ahead of it (barrier.py): the winners
found in a streamed bets.csv, in one pass or in pieces, are exactly the winning bets."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import SERVER_DIR, AgencyBets, bet, open_storage
from lottery import config, draw, files
from lottery.barrier import Barrier


def test_draw_streams_and_finds_exactly_the_winners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draw, "CHUNK_SIZE", 64)  # many chunk boundaries inside lines
    store = open_storage(tmp_path, 3)
    bets = [bet(f"{n}", "7574" if n % 7 == 0 else str(n)) for n in range(1, 200)]
    bets += [bet("900", "07574"), bet("901", "75740"), bet("902", "17574")]
    # Quoted names: a winner's, and names that hold ",7574" without the bet's number being it.
    bets += [bet("903", "7574", first='Ana "7574", Paz', last="Ruiz, Soto"), bet("904", "1", last="Ruiz,7574"),
             bet("905", "2", first="Ruiz,7574,", last='"7574"')]
    store.store_batches([AgencyBets(1).batch(bets[:100]), AgencyBets(2).batch(bets[100:])])
    size = (tmp_path / files.BETS_FILE).stat().st_size
    winners = draw.find_winners(tmp_path / files.BETS_FILE, size)
    expected = [(1 if n <= 100 else 2, str(n)) for n in range(1, 200) if n % 7 == 0] + [(2, "900"), (2, "903")]
    assert winners == expected
    assert not draw.draw_done(tmp_path)
    assert draw.run_draw(tmp_path, size) == len(expected)
    assert draw.draw_done(tmp_path)
    result = draw.load_winners(tmp_path)
    assert result[1] == [d for a, d in expected if a == 1]
    assert result[2] == [d for a, d in expected if a == 2]


def test_a_scan_in_pieces_finds_what_one_scan_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The barrier scans ahead at every end the journal records, a bounded number of bytes at a
    time (cut back to a whole line); the draw then reads only the rest. Winners and winners.csv
    are those of one scan of the whole file."""
    monkeypatch.setattr(draw, "CHUNK_SIZE", 64)
    rng = random.Random(5)
    store = open_storage(tmp_path, 3)
    agencies = [AgencyBets(agency) for agency in (1, 2, 3)]
    ends = []
    for n in range(60):
        bets = [bet(f"{n}{i}", rng.choice(["7574", "07574", "17574", "1"])) for i in range(rng.randint(1, 9))]
        store.store_batches([rng.choice(agencies).batch(bets)])
        ends.append(store.view.bets_end)
    path, size = tmp_path / files.BETS_FILE, ends[-1]
    whole = draw.find_winners(path, size)
    assert len(whole) > 10
    for _ in range(20):
        scan = draw.Scan()
        for end in sorted(rng.sample(ends[:-1], 8)):
            scan.advance(path, end, rng.choice([None, 1, 40, 300]))
            assert scan.end <= end and (scan.end == 0 or path.read_bytes()[: scan.end].endswith(b"\n"))
            assert scan.winners == draw.find_winners(path, scan.end)
        assert draw.run_draw(tmp_path, size, scan) == len(whole)
        assert scan.end == size and scan.winners == whole
        assert (tmp_path / files.WINNERS_FILE).read_bytes() == b"".join(b"%d,%s\n" % (a, d.encode()) for a, d in whole)


def test_the_barrier_scans_the_stored_bets_before_the_last_fin(tmp_path: Path) -> None:
    """Before every agency has sent its FIN, each look of the barrier scans what is stored; the
    draw reads only the bets stored after its last look, and finds every winner."""
    store = open_storage(tmp_path, 2)
    settings = config.load(SERVER_DIR / "config.ini", {"STORAGE_DIR": str(tmp_path), "AGENCIES": "2"})
    barrier = Barrier(settings, store)
    one, two = AgencyBets(1), AgencyBets(2)
    store.store_batches([one.batch([bet("1", "7574"), bet("2")]), two.batch([bet("3", "7574")])])
    store.record_fin(1, 2, one.chain)
    assert not barrier.check(force=True)
    scanned = barrier.scan.end
    assert scanned == store.view.bets_end and [d for _, d in barrier.scan.winners] == ["1", "3"]
    store.store_batches([two.batch([bet("4", "7574"), bet("5")])])
    store.record_fin(2, 3, two.chain)
    assert barrier.check(force=True)
    assert barrier.scan.end == store.view.bets_end > scanned
    assert draw.load_winners(tmp_path) == {1: ["1"], 2: ["3", "4"]}
