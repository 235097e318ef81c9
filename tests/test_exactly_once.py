"""Protocol version 2 on the real server over raw sockets: every bet exactly once, whatever the
batching (positions and the CRC-32 chain), HELLO / RESUME, and names that need RFC 4180 quoting.

Each rule of the BET and FIN tables of docs/protocol.md gets its own test; every refusal is also
checked to have stored nothing (bets.csv and what RESUME says are unchanged).
"""

from __future__ import annotations

import csv
import io
import re

import pytest

from conftest import AgencyBets, Row, batch, bet, chain_of, csv_rows, row
from lottery import protocol
from lottery.protocol import ErrorCode
from wire import bet_lines


def expect_error(message: protocol.Message, code: ErrorCode, position: int = 0) -> protocol.Error:
    assert isinstance(message, protocol.Error), message
    assert message.code is code and message.position == position, message
    return message


def resume(peer, agency: int) -> protocol.Resume:
    peer.send(protocol.Hello(agency))
    answer = peer.recv()
    assert isinstance(answer, protocol.Resume), answer
    return answer


def numbered(count: int, start: int = 1) -> list[Row]:
    return [bet(str(1000 + n), str(n)) for n in range(start, start + count)]


# --- names that need quoting -----------------------------------------------------------------

NAMES = [
    ("Pérez, Juan", "Gómez"),  # a comma
    ('Ana "la Tana"', "O'Neill"),  # double quotes (doubled on the wire), an apostrophe
    ("José; María", "D'Alessandro"),  # a semicolon: no quoting needed
    ("Ñ" * 50, "Ü" * 50),  # 100 bytes of accents
    ('A,"' * 33 + "A", '"' * 100),  # 100-byte names of commas and double quotes
    ("Zoë", "Ruiz,7574"),  # a name that looks like the winning number's field
]


def test_names_with_commas_and_quotes_travel_field_for_field_and_win_the_draw(start_server, peers) -> None:
    server = start_server(agencies=1, LOGGING_LEVEL="DEBUG")
    peer = peers(server.port)
    agency = AgencyBets(1)
    bets = [bet(str(20111222 + i), "7574" if i % 2 == 0 else "12", first=first, last=last)
            for i, (first, last) in enumerate(NAMES)]
    assert all(len(b[0].encode()) <= 100 and len(b[1].encode()) <= 100 for b in bets)
    assert max(len(b[0].encode()) for b in bets) == 100
    longest = bet("9999999999", "9999999999", first='"' * 100, last='"' * 100, birthdate="2000-02-29")
    peer.send(agency.batch(bets[:4]))
    peer.send(agency.batch(bets[4:] + [longest]))
    assert [peer.recv(), peer.recv()] == [protocol.Ack(1, 4), protocol.Ack(1, 7)]
    sent = bets + [longest]

    rows = csv_rows(server.storage)
    assert rows == [row(1, b) for b in sent]
    assert rows[3][1] == "Ñ" * 50 and rows[4][2] == '"' * 100 and rows[5][2] == "Ruiz,7574"
    # bets.csv is canonical RFC 4180: exactly what csv.writer writes with minimal quoting.
    canonical = io.StringIO()
    csv.writer(canonical, lineterminator="\n").writerows(rows)
    assert (server.storage / "bets.csv").read_bytes() == canonical.getvalue().encode("utf-8")
    assert b'1,"Ana ""la Tana""",O\'Neill,' in (server.storage / "bets.csv").read_bytes()
    for b in sent:  # the DEBUG line of each bet finds its document and number despite the commas
        assert f"apuesta_almacenada | result: success | dni: {b[2]} | numero: {b[4]}" in server.log()

    assert resume(peer, 1) == protocol.Resume(1, 7, chain_of(sent), False)
    peer.send(agency.fin())
    assert peer.recv() == protocol.FinAck(1)
    peer.send(protocol.WinnersQuery(1))
    winners = tuple(b[2] for b in sent if b[4] == "7574")
    assert winners == ("20111222", "20111224", "20111226")  # 'Pérez, Juan', 'José; María', 'A,"A,"...'
    assert peer.recv() == protocol.Winners(1, True, winners)
    assert (server.storage / "winners.csv").read_text().splitlines() == [f"1,{d}" for d in winners]
    server.wait_log(r"action: sorteo \| result: success")


# --- HELLO and RESUME ------------------------------------------------------------------------


def test_resume_says_what_is_stored_and_survives_a_crash(start_server, peers, tmp_path) -> None:
    storage = tmp_path / "kept"
    server = start_server(agencies=2, storage=storage)
    peer = peers(server.port)
    assert resume(peer, 1) == protocol.Resume(1, 0, 0, False)  # a fresh storage
    agency = AgencyBets(1)
    bets = numbered(7)
    bets[2] = bet("1003", first="Pérez, Juan")
    # HELLO behind two batches on the same connection counts them: answers leave in order.
    peer.send_raw(protocol.encode(agency.batch(bets[:3])) + protocol.encode(agency.batch(bets[3:]))
                  + protocol.encode(protocol.Hello(1)))
    assert [peer.recv(), peer.recv()] == [protocol.Ack(1, 3), protocol.Ack(1, 7)]
    stored = protocol.Resume(1, 7, protocol.chain(bet_lines(bets)), False)
    assert peer.recv() == stored
    assert stored.chain == protocol.chain(bet_lines(bets[3:]), protocol.chain(bet_lines(bets[:3])))
    other = peers(server.port)  # agency 1's next connection, whichever worker serves it
    assert resume(other, 1) == stored
    assert resume(peers(server.port, agency=2), 2) == protocol.Resume(2, 0, 0, False)
    server.wait_log(r"action: hello \| result: success \| agency: 1 \| stored: 7 \| chain: "
                    + f"{stored.chain:08x}" + r" \| finished: 0")
    server.kill()

    server = start_server(agencies=2, storage=storage)
    peer = peers(server.port)
    assert resume(peer, 1) == stored
    peer.send(agency.fin())
    assert peer.recv() == protocol.FinAck(1)
    finished = protocol.Resume(1, 7, stored.chain, True)
    assert resume(peer, 1) == finished
    server.kill()

    server = start_server(agencies=2, storage=storage)
    peer = peers(server.port)
    assert resume(peer, 1) == finished
    assert resume(peers(server.port, agency=2), 2) == protocol.Resume(2, 0, 0, False)
    assert csv_rows(storage) == [row(1, b) for b in bets]


# --- the BET table ---------------------------------------------------------------------------


def store_two_batches_of_five(server, peers) -> tuple[AgencyBets, list[Row], object]:
    """Agency 1 stores bets 1..10 as two batches of 5; returns the sender, the bets and a peer."""
    peer = peers(server.port)
    agency = AgencyBets(1)
    bets = numbered(20)
    peer.send(agency.batch(bets[:5]))
    peer.send(agency.batch(bets[5:10]))
    assert [peer.recv(), peer.recv()] == [protocol.Ack(1, 5), protocol.Ack(1, 10)]
    return agency, bets, peer


def assert_nothing_more_stored(server, peer, agency: AgencyBets, bets: list[Row]) -> None:
    assert csv_rows(server.storage) == [row(1, b) for b in bets[: agency.stored]]
    assert resume(peer, 1) == agency.resume()


def test_the_next_batch_is_stored_and_logged_with_its_first_position(start_server, peers) -> None:
    server = start_server()
    agency, bets, peer = store_two_batches_of_five(server, peers)
    peer.send(agency.batch(bets[10:13]))
    assert peer.recv() == protocol.Ack(1, 13)
    assert csv_rows(server.storage) == [row(1, b) for b in bets[:13]]
    for first, count in ((1, 5), (6, 5), (11, 3)):
        server.wait_log(rf"action: apuesta_recibida \| result: success \| cantidad: {count} \| agency: 1 "
                        rf"\| seq: {first}\n")


def test_another_chain_at_stored_plus_one_is_a_mismatch_naming_both_checksums(start_server, peers) -> None:
    server = start_server()
    agency, bets, peer = store_two_batches_of_five(server, peers)
    wrong = chain_of(bets[:10], 0x1234)  # another file's chain
    assert wrong != agency.chain
    peer.send(batch(1, 11, bets[10:15], wrong))
    error = expect_error(peer.recv(), ErrorCode.BETS_MISMATCH, position=11)
    assert f"{wrong:08x}" in error.reason and f"{agency.chain:08x}" in error.reason, error.reason
    server.wait_log(r"action: apuesta_recibida \| result: fail \| cantidad: 5 \| agency: 1 \| seq: 11 "
                    rf"\| code: BETS_MISMATCH \| reason: .*{wrong:08x}.*{agency.chain:08x}")
    assert_nothing_more_stored(server, peer, agency, bets)
    peer.send(agency.batch(bets[10:15]))  # the right chain is stored
    assert peer.recv() == protocol.Ack(1, 15)


@pytest.mark.parametrize("first", [12, 20, 0xFFFFFFFF])
def test_a_batch_past_stored_plus_one_is_a_gap(start_server, peers, first) -> None:
    server = start_server()
    agency, bets, peer = store_two_batches_of_five(server, peers)
    peer.send(batch(1, first, bets[11:12], agency.chain))
    error = expect_error(peer.recv(), ErrorCode.SEQUENCE_GAP, position=first)
    assert "1..10" in error.reason, error.reason
    server.wait_log(rf"apuesta_recibida \| result: fail \| cantidad: 1 \| agency: 1 \| seq: {first} "
                    r"\| code: SEQUENCE_GAP")
    assert_nothing_more_stored(server, peer, agency, bets)


def test_an_exact_resend_of_the_last_batch_is_acknowledged_and_stored_once(start_server, peers) -> None:
    server = start_server()
    agency, bets, peer = store_two_batches_of_five(server, peers)
    last = agency.batches[-1]
    peer.send(last)
    assert peer.recv() == protocol.Ack(1, 10)
    again = peers(server.port)  # a reconnected agency resending what it had in flight
    again.send(last)
    again.send(last)
    assert [again.recv(), again.recv()] == [protocol.Ack(1, 10), protocol.Ack(1, 10)]
    assert peer.closed_by_server()  # the new session superseded the old one
    server.wait_log(r"action: batch_duplicate \| result: success \| agency: 1 \| seq: 6", count=3)
    assert_nothing_more_stored(server, again, agency, bets)


@pytest.mark.parametrize(
    "make",
    [
        lambda a, bets: a.batches[0],  # a resend of an older batch
        lambda a, bets: batch(1, 1, bets[:10]),  # the stored positions cut otherwise: 1..10 at once
        lambda a, bets: batch(1, 6, numbered(5, start=50), a.batches[0].chain_after),  # other bets for 6..10
        lambda a, bets: batch(1, 6, bets[5:10], a.batches[0].chain_after ^ 1),  # the last batch, another chain
        lambda a, bets: batch(1, 6, bets[5:11], a.batches[0].chain_after),  # the last batch and one bet more
        lambda a, bets: batch(1, 8, bets[7:10], chain_of(bets[:7])),  # the tail of the last batch
        lambda a, bets: batch(1, 10, bets[9:12], chain_of(bets[:9])),  # overlapping: stored 10, new 11 and 12
        lambda a, bets: batch(1, 3, bets[2:4], chain_of(bets[:2])),  # inside an older batch
    ],
    ids=["older_batch", "recut_1_to_10", "other_bets", "other_chain", "last_plus_one", "tail", "overlap",
         "inside_older"],
)
def test_other_bets_for_stored_positions_are_a_mismatch_and_store_nothing(start_server, peers, make) -> None:
    server = start_server()
    agency, bets, peer = store_two_batches_of_five(server, peers)
    refused = make(agency, bets)
    peer.send(refused)
    error = expect_error(peer.recv(), ErrorCode.BETS_MISMATCH, position=refused.first)
    assert f"{agency.chain:08x}" in error.reason, error.reason
    server.wait_log(rf"apuesta_recibida \| result: fail \| cantidad: {refused.count} \| agency: 1 "
                    rf"\| seq: {refused.first} \| code: BETS_MISMATCH")
    assert_nothing_more_stored(server, peer, agency, bets)
    peer.send(agency.batch(bets[10:12]))  # the agency's own next batch still goes in
    assert peer.recv() == protocol.Ack(1, 12)


def test_a_batch_recut_after_resume_is_stored(start_server, peers) -> None:
    """An agency restarted with another batch size: it learns what is stored and goes on from
    there, cut its new way; every bet ends up stored once, in order."""
    server = start_server()
    _, bets, first_run = store_two_batches_of_five(server, peers)
    first_run.close()
    peer = peers(server.port)
    answer = resume(peer, 1)
    assert (answer.stored, answer.chain) == (10, chain_of(bets[:10]))
    agency = AgencyBets(1, answer.stored, answer.chain)
    sizes = [3, 1, 6]
    position = 10
    for size in sizes:
        peer.send(agency.batch(bets[position : position + size]))
        position += size
    assert [peer.recv() for _ in sizes] == [protocol.Ack(1, 13), protocol.Ack(1, 14), protocol.Ack(1, 20)]
    peer.send(agency.fin())
    assert peer.recv() == protocol.FinAck(1)
    assert csv_rows(server.storage) == [row(1, b) for b in bets]
    server.wait_log(r"action: fin \| result: success \| agency: 1 \| bets: 20")


def test_a_refused_batch_in_a_pipeline_stops_those_built_on_it(start_server, peers) -> None:
    server = start_server()
    peer = peers(server.port)
    agency, bets = AgencyBets(1), numbered(9)
    first = agency.batch(bets[:3])
    wrong = batch(1, 4, bets[3:6], 0xBAD)  # another chain: refused
    behind = batch(1, 7, bets[6:9], wrong.chain_after)  # built on the refused one: a gap now
    peer.send_raw(b"".join(protocol.encode(m) for m in (first, wrong, behind, first)))
    assert peer.recv() == protocol.Ack(1, 3)
    expect_error(peer.recv(), ErrorCode.BETS_MISMATCH, position=4)
    expect_error(peer.recv(), ErrorCode.SEQUENCE_GAP, position=7)
    assert peer.recv() == protocol.Ack(1, 3)  # the last stored batch, resent
    assert_nothing_more_stored(server, peer, agency, bets)


def test_a_second_program_claiming_the_agency_is_refused(start_server, peers) -> None:
    """Two files for one agency: whatever the second sends, from position 1 or after RESUME, it
    never stores anything on top of the first one's bets."""
    server = start_server()
    owner, bets, _ = store_two_batches_of_five(server, peers)
    intruder = peers(server.port)  # it holds agency 1's credentials too
    theirs = AgencyBets(1)
    other_bets = [bet(str(5000 + n), first="Otro, Nombre") for n in range(10)]
    intruder.send(theirs.batch(other_bets[:5]))
    expect_error(intruder.recv(), ErrorCode.BETS_MISMATCH, position=1)
    told = resume(intruder, 1)
    assert told.chain != chain_of(other_bets[:10])  # what an agency checks before sending
    intruder.send(AgencyBets(1, told.stored, chain_of(other_bets[:10])).batch(other_bets[5:]))
    expect_error(intruder.recv(), ErrorCode.BETS_MISMATCH, position=11)
    intruder.send(protocol.Fin(1, 10, chain_of(other_bets[:10])))
    expect_error(intruder.recv(), ErrorCode.BETS_MISMATCH)
    assert_nothing_more_stored(server, intruder, owner, bets)


# --- the FIN rules ---------------------------------------------------------------------------


def test_a_fin_behind_its_batches_is_stored_with_them_and_a_cut_one_is_all_or_a_prefix(start_server, peers) -> None:
    """The agency sends its FIN in the same write as its last batches (docs/protocol.md, FIN):
    the central decides it after them and answers it after their ACKs. A connection cut right
    after that write (agency 2), or once the FIN is recorded but before any answer is read
    (agency 3), leaves by the next RESUME whole batches in order, the FIN only with all of them;
    sending the rest again stores every bet once."""
    server = start_server(agencies=3)
    peer = peers(server.port)
    agency, bets = AgencyBets(1), numbered(9)
    batches = [agency.batch(bets[i : i + 3]) for i in (0, 3, 6)]
    peer.send_raw(b"".join(protocol.encode(m) for m in (*batches, agency.fin())))
    assert [peer.recv() for _ in range(4)] == [protocol.Ack(1, 3), protocol.Ack(1, 6), protocol.Ack(1, 9),
                                                protocol.FinAck(1)]
    server.wait_log(r"action: fin \| result: success \| agency: 1 \| bets: 9\n")
    assert resume(peer, 1) == agency.resume(finished=True)

    expected_rows = [row(1, b) for b in bets]
    for number, answers_lost in ((2, False), (3, True)):
        sender, theirs = AgencyBets(number), numbered(6, start=100 * number)
        frames = [sender.batch(theirs[:3]), sender.batch(theirs[3:]), sender.fin()]
        cut = peers(server.port, agency=number)
        cut.send_raw(b"".join(protocol.encode(m) for m in frames))
        if answers_lost:
            server.wait_log(rf"action: fin \| result: success \| agency: {number} \| bets: 6\n")
        cut.close()  # reading no answer
        again = peers(server.port, agency=number)
        told = resume(again, number)
        assert (told.stored, told.chain) in ((0, 0), (3, chain_of(theirs[:3])), (6, chain_of(theirs))), told
        assert not told.finished or told.stored == 6, told  # never the FIN without its batches
        assert told.finished or not answers_lost, told
        if not told.finished:
            rest = frames[told.stored // 3 :]
            again.send_raw(b"".join(protocol.encode(m) for m in rest))
            acks = [protocol.Ack(number, 3), protocol.Ack(number, 6)][told.stored // 3 :]
            assert [again.recv() for _ in range(len(acks) + 1)] == [*acks, protocol.FinAck(number)]
        assert resume(again, number) == protocol.Resume(number, 6, chain_of(theirs), True)
        expected_rows += [row(number, b) for b in theirs]
    assert sorted(csv_rows(server.storage)) == sorted(expected_rows)  # each bet once


def test_fin_rules(start_server, peers) -> None:
    server = start_server(agencies=3)
    agency, bets, peer = store_two_batches_of_five(server, peers)

    peer.send(protocol.Fin(1, 10, agency.chain ^ 0xFFFF))
    error = expect_error(peer.recv(), ErrorCode.BETS_MISMATCH)
    assert f"{agency.chain ^ 0xFFFF:08x}" in error.reason and f"{agency.chain:08x}" in error.reason, error.reason
    server.wait_log(r"action: fin \| result: fail \| agency: 1 \| bets: 10 \| code: BETS_MISMATCH")
    for count in (9, 11, 0):
        peer.send(protocol.Fin(1, count, agency.chain))
        error = expect_error(peer.recv(), ErrorCode.SEQUENCE_GAP)
        assert f"{count} bets, 10 stored" in error.reason, error.reason
    assert resume(peer, 1) == agency.resume(finished=False)

    peer.send(agency.fin())
    assert peer.recv() == protocol.FinAck(1)
    server.wait_log(r"action: fin \| result: success \| agency: 1 \| bets: 10\n")
    peer.send(agency.fin())
    expect_error(peer.recv(), ErrorCode.DUPLICATE_FIN)
    for other in (protocol.Fin(1, 10, agency.chain ^ 1), protocol.Fin(1, 11, agency.chain), protocol.Fin(1, 0, 0)):
        peer.send(other)
        expect_error(peer.recv(), ErrorCode.AGENCY_FINISHED)
    peer.send(agency.batch(bets[10:12]))
    expect_error(peer.recv(), ErrorCode.AGENCY_FINISHED, position=11)
    assert resume(peer, 1) == protocol.Resume(1, 10, chain_of(bets[:10]), True)
    assert csv_rows(server.storage) == [row(1, b) for b in bets[:10]]

    empty = peers(server.port, agency=2)  # an agency without bets: FIN 0 with chain 0, and nothing else
    empty.send(protocol.Fin(2, 0, 1))
    expect_error(empty.recv(), ErrorCode.BETS_MISMATCH)
    empty.send(protocol.Fin(2, 0, 0))
    assert empty.recv() == protocol.FinAck(2)
    assert resume(empty, 2) == protocol.Resume(2, 0, 0, True)
    assert not re.search(r"action: sorteo", server.log())  # agency 3 has not finished
