"""The Python protocol module against the shared byte-exact vectors (version 2), plus random-frame fuzzing."""

from __future__ import annotations

import csv
import datetime
import json
import random
import zlib

import pytest

import wire
from conftest import ROOT
from lottery import bets, protocol
from lottery.protocol import ErrorCode, MsgType, ProtocolError

VECTORS = json.loads((ROOT / "testdata" / "protocol_vectors.json").read_text(encoding="utf-8"))


def message_from_fields(kind: str, fields: dict) -> protocol.Message:
    if kind == "ECHO":
        return protocol.Echo(bytes.fromhex(fields["payload_hex"]))
    if kind == "BET":
        rows = [tuple(b) for b in fields["bets"]]
        return protocol.Bet(fields["agency"], fields["first"], len(rows), fields["chain"], wire.bet_lines(rows))
    if kind == "ACK":
        return protocol.Ack(fields["agency"], fields["stored"])
    if kind == "FIN":
        return protocol.Fin(fields["agency"], fields["bets"], fields["chain"])
    if kind == "HELLO":
        return protocol.Hello(fields["agency"])
    if kind == "RESUME":
        return protocol.Resume(fields["agency"], fields["stored"], fields["chain"], fields["finished"])
    if kind == "FIN_ACK":
        return protocol.FinAck(fields["agency"])
    if kind == "WINNERS_QUERY":
        return protocol.WinnersQuery(fields["agency"])
    if kind == "WINNERS":
        return protocol.Winners(fields["agency"], fields["last"], tuple(fields["documents"]))
    if kind == "ERROR":
        assert ErrorCode(fields["code"]).name == fields["code_name"]
        return protocol.Error(ErrorCode(fields["code"]), fields["position"], fields["reason"])
    raise AssertionError(kind)


def decode(raw: bytes) -> protocol.Message:
    view = memoryview(raw)
    position = 0

    def read_exact(n: int) -> bytes:
        nonlocal position
        if position + n > len(view):
            raise wire.TruncatedFrame(f"wanted {n} bytes at {position}")
        position += n
        return bytes(view[position - n : position])

    message = wire.read_frame(read_exact)
    assert position == len(raw), "trailing bytes after the frame"
    return message


def test_the_vectors_are_version_2_and_cover_every_message_type() -> None:
    assert VECTORS["version"] == protocol.VERSION == 2
    assert VECTORS["header_size"] == protocol.HEADER_SIZE
    assert {v["type"] for v in VECTORS["frames"]} == {t.name for t in MsgType}
    assert {v["fields"]["code"] for v in VECTORS["frames"] if v["type"] == "ERROR"} >= {
        ErrorCode.INVALID_BET, ErrorCode.BETS_MISMATCH, ErrorCode.AGENCY_MISMATCH}
    assert all(v["hex"].startswith("02") for v in VECTORS["frames"])


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_encode_matches_vector(vector: dict) -> None:
    message = message_from_fields(vector["type"], vector["fields"])
    assert protocol.encode(message).hex() == vector["hex"]


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_decode_matches_vector(vector: dict) -> None:
    raw = bytes.fromhex(vector["hex"])
    assert raw[1] == MsgType[vector["type"]]
    assert decode(raw) == message_from_fields(vector["type"], vector["fields"])


@pytest.mark.parametrize("vector", VECTORS["invalid_frames"], ids=lambda v: v["name"])
def test_invalid_frames_are_refused_with_their_code(vector: dict) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(bytes.fromhex(vector["hex"]))
    assert caught.value.code is ErrorCode[vector["error"]]


@pytest.mark.parametrize("vector", VECTORS["bet_lines"], ids=lambda v: v["line"][:40])
def test_bet_line_rules(vector: dict) -> None:
    line = vector["line"].encode("utf-8")
    reason = bets.bet_line_error(line)
    if vector["valid"]:
        assert reason is None
        bets.validate_bets(line + b"\n", 1)  # the fast path agrees
    else:
        assert reason is not None and vector["reason"] in reason
        with pytest.raises(bets.InvalidBatch) as caught:
            bets.validate_bets(line + b"\n", 1)
        assert not caught.value.malformed  # INVALID_BET, not MALFORMED
        assert caught.value.reason == f"bet 1: {reason}"
        # One bad line refuses the whole batch, whichever line it is.
        good = b"Ana,Lopez,1,1990-01-01,1\n"
        with pytest.raises(bets.InvalidBatch) as caught:
            bets.validate_bets(good + line + b"\n" + good, 3)
        assert not caught.value.malformed and caught.value.reason == f"bet 2: {reason}"


@pytest.mark.parametrize("vector", [v for v in VECTORS["bet_lines"] if v["valid"]], ids=lambda v: v["line"][:40])
def test_a_valid_bet_line_is_the_one_canonical_rfc_4180_encoding_of_its_fields(vector: dict) -> None:
    """A valid line reads back with the csv module as five fields, and encoding those fields
    (bets.bet_line, and csv.writer's minimal quoting) gives back the very same bytes."""
    (fields,) = list(csv.reader([vector["line"]]))
    assert len(fields) == 5
    assert bets.bet_line(tuple(fields)) == vector["line"].encode("utf-8") + b"\n"
    assert wire.bet_lines([tuple(fields)] * 2) == (vector["line"] + "\n").encode("utf-8") * 2


@pytest.mark.parametrize(
    "fields, line",
    [
        (("Pérez, Juan", "Gómez", "1", "1990-01-01", "7574"), '"Pérez, Juan",Gómez,1,1990-01-01,7574'),
        (('Ana "la Tana"', "O'Neill", "1", "1990-01-01", "1"), '"Ana ""la Tana""",O\'Neill,1,1990-01-01,1'),
        (("José; María", "D'Alessandro", "1", "1990-01-01", "1"), "José; María,D'Alessandro,1,1990-01-01,1"),
        (('"', ",", "1", "1990-01-01", "1"), '"""",",",1,1990-01-01,1'),
        (('"' * 100, "," * 100, "1", "1990-01-01", "1"), '"' + '""' * 100 + '","' + "," * 100 + '",1,1990-01-01,1'),
    ],
    ids=["comma", "double_quote", "semicolon_apostrophe", "lone_quote_and_comma", "longest"],
)
def test_bet_line_quotes_a_name_exactly_when_it_holds_a_comma_or_a_double_quote(fields, line) -> None:
    encoded = bets.bet_line(fields)
    assert encoded == line.encode("utf-8") + b"\n"
    assert bets.bet_line_error(encoded[:-1]) is None
    bets.validate_bets(encoded, 1)
    assert tuple(next(csv.reader([line]))) == fields


def test_the_longest_bet_line_is_438_bytes_before_its_newline() -> None:
    longest = bets.bet_line(('"' * 100, '"' * 100, "9" * 10, "2000-02-29", "9" * 10))
    assert len(longest) == 438 + 1
    bets.validate_bets(longest, 1)
    with pytest.raises(bets.InvalidBatch):  # one more quote makes a 101-byte name
        bets.validate_bets(bets.bet_line(('"' * 101, "B", "1", "2000-02-29", "1")), 1)


def test_the_chain_is_the_crc32_of_every_bet_line_so_far_whatever_the_batching() -> None:
    lines = [bets.bet_line((f"N{n}", "Paz, Ruiz" if n % 3 else "Ñú", str(n), "1990-01-01", "1"))
             for n in range(30)]
    whole = zlib.crc32(b"".join(lines))
    assert protocol.chain(b"") == 0
    for cut in ([30], [10, 20], [1] * 30, [7, 7, 7, 9]):
        chain, position = 0, 0
        for size in cut:
            chain = protocol.chain(b"".join(lines[position : position + size]), chain)
            position += size
        assert chain == whole
    batch = protocol.Bet(1, 11, 20, protocol.chain(b"".join(lines[:10])), b"".join(lines[10:]))
    assert batch.last == 30 and batch.chain_after == whole


def test_largest_vectors_fill_the_maximum_frame() -> None:
    sizes = {v["name"]: len(v["hex"]) // 2 for v in VECTORS["frames"]}
    assert sizes["echo_largest"] == protocol.MAX_FRAME == VECTORS["max_frame"]
    assert sizes["bet_largest"] == protocol.MAX_FRAME
    largest = decode(bytes.fromhex(next(v["hex"] for v in VECTORS["frames"] if v["name"] == "bet_largest")))
    assert isinstance(largest, protocol.Bet) and largest.last == 0xFFFFFFFF
    assert len(largest.bets) == protocol.MAX_BETS_BYTES == 8172


def test_the_ack_made_in_one_step_is_the_encoded_ack() -> None:
    for agency, stored in ((1, 1), (7, 100), (0xFFFFFFFF, 0xFFFFFFFF)):
        assert protocol.ack_frame(agency, stored) == protocol.encode(protocol.Ack(agency, stored))
    acks = [v for v in VECTORS["frames"] if v["type"] == "ACK"]
    assert acks
    for vector in acks:
        ack = decode(bytes.fromhex(vector["hex"]))
        assert isinstance(ack, protocol.Ack) and protocol.ack_frame(ack.agency, ack.stored).hex() == vector["hex"]


def test_encoder_refuses_a_frame_over_the_maximum() -> None:
    with pytest.raises(ValueError):
        protocol.encode(protocol.Echo(b"x" * (protocol.MAX_PAYLOAD + 1)))


def test_header_is_refused_before_the_payload_is_read() -> None:
    reads: list[int] = []
    header = bytes.fromhex("0201ffffffff")

    def read_exact(n: int) -> bytes:
        reads.append(n)
        return header

    with pytest.raises(ProtocolError) as caught:
        wire.read_frame(read_exact)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert reads == [protocol.HEADER_SIZE]


def test_winners_pages_split_at_the_frame_limit() -> None:
    documents = [f"{n:010d}" for n in range(2000)]
    pages = protocol.winners_pages(4, documents)
    assert len(pages) > 1
    decoded = [decode(page) for page in pages]
    assert all(len(page) <= protocol.MAX_FRAME for page in pages)
    assert [m.last for m in decoded] == [False] * (len(pages) - 1) + [True]
    assert [d for m in decoded for d in m.documents] == documents
    assert decode(protocol.winners_pages(2, [])[0]) == protocol.Winners(2, True, ())


def test_batch_validation_names_the_first_bad_bet() -> None:
    lines = b"Ana,Lopez,1,1990-01-01,1\nBea,Diaz,2,1990-02-30,2\nCid,Paz,x,1990-01-01,3\n"
    with pytest.raises(bets.InvalidBatch) as caught:
        bets.validate_bets(lines, 3)
    assert not caught.value.malformed
    assert caught.value.reason == "bet 2: birthdate"


def is_calendar_date(year: int, month: int, day: int) -> bool:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def test_the_date_pattern_is_the_calendar() -> None:
    """The one pattern that settles a birthdate (bets._DATE) against the calendar: February 29
    of every year 0000..9999, and every month 00..13 and day 00..32 of years that matter."""
    cases = [(year, 2, day) for year in range(10000) for day in (28, 29, 30)]
    cases += [
        (year, month, day)
        for year in (0, 1, 4, 100, 400, 1900, 1999, 2000, 2023, 2024, 2100, 2400, 9996, 9999)
        for month in range(14)
        for day in range(33)
    ]
    for year, month, day in cases:
        text = b"%04d-%02d-%02d" % (year, month, day)
        assert (bets._DATE_RE.fullmatch(text) is not None) == is_calendar_date(year, month, day), text


def random_bet_lines(rng: random.Random, count: int) -> bytes:
    """`count` lines, each a valid bet line mutated at random (or not) with the bytes that matter."""
    pieces = [b",", b'"', b"\n", b"\x00", b"\x1f", b"\x7f", b"\xc2\x85", b"\xc2\xa0", b"\xff", b"0", b"9", b"-",
              b"a", b"\xc3\xa9", b" ", b"02-29", b"1900", b"2000", b"x" * 101]
    lines = []
    for _ in range(count):
        year = rng.choice([1900, 1999, 2000, 2024, 2100, rng.randint(0, 9999)])
        month, day = rng.randint(0, 13), rng.randint(0, 32) if rng.random() < 0.3 else rng.randint(1, 28)
        line = bytearray(b"%s,%s,%d,%04d-%02d-%02d,%d" % (
            rng.choice([b"Ana", b"Mar\xc3\xada Jos\xc3\xa9", b"O'Brien", b"x" * rng.randint(1, 100)]),
            rng.choice([b"Lopez", b"D\xc3\xadaz-Paz", b"y" * rng.randint(1, 100)]),
            rng.choice([0, 7, 12345678, 9999999999, 10**10]), year, month, day, rng.choice([0, 7574, 9999999999])))
        for _ in range(rng.choice([0, 0, 1, 2])):
            at = rng.randrange(len(line) + 1)
            cut = rng.choice([0, 0, 1])
            line[at : at + cut] = rng.choice(pieces)
        lines.append(bytes(line) + b"\n")
    return b"".join(lines)


def test_the_fast_path_and_the_line_by_line_rules_agree_on_random_batches() -> None:
    """A valid batch without quotes is settled by the fast path (bets._plain_batch_valid: the
    separators left once every field byte is deleted, then one pattern); every other batch, and
    every refusal, by the rules line by line. For random batches, wrong line counts, quotes, control
    characters and invalid UTF-8 included, the fast path must accept exactly the valid batches
    without quotes, and never one the rules refuse."""
    rng = random.Random(14)
    agreed = {True: 0, False: 0}
    for _ in range(40000):
        lines = rng.randint(1, 4)
        batch = random_bet_lines(rng, lines)
        count = lines if rng.random() < 0.9 else rng.randint(1, 5)
        try:
            bets.validate_bets(batch, count)
            valid = True
        except bets.InvalidBatch:
            valid = False
        slow = batch.count(b"\n") == count and batch.endswith(b"\n") and all(
            bets.bet_line_error(line) is None for line in batch.split(b"\n")[:count])
        assert valid == slow, batch
        fast = bets._plain_batch_valid(batch, count)
        assert fast == (slow and b'"' not in batch), (batch, count)
        agreed[slow] += 1
    assert agreed[True] > 1000 and agreed[False] > 1000  # both verdicts were exercised


def test_random_frames_never_escape_as_other_exceptions() -> None:
    """Random and mutated frames: decoding either succeeds or raises ProtocolError/TruncatedFrame."""
    rng = random.Random(7574)
    seeds = [bytes.fromhex(v["hex"]) for v in VECTORS["frames"] if len(v["hex"]) < 2000]
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(20000):
        if rng.random() < 0.5:
            raw = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            if rng.random() < 0.2:
                del raw[rng.randrange(len(raw)) :]
        else:
            raw = bytearray([protocol.VERSION, rng.randint(0, 11)]) + rng.randbytes(4)
            raw[2:6] = rng.randint(0, 64).to_bytes(4, "big")
            raw += rng.randbytes(rng.randint(0, 64))
        try:
            message = decode(bytes(raw))
        except (ProtocolError, wire.TruncatedFrame, AssertionError):
            outcomes["refused"] += 1
        else:
            outcomes["ok"] += 1
            assert protocol.encode(message) == bytes(raw)  # what decodes re-encodes identically
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0
