"""The Python protocol module against the shared byte-exact vectors, plus random-frame fuzzing."""

from __future__ import annotations

import json
import random

import pytest

from conftest import ROOT
from lottery import protocol
from lottery.protocol import ErrorCode, MsgType, ProtocolError

VECTORS = json.loads((ROOT / "testdata" / "protocol_vectors.json").read_text(encoding="utf-8"))


def message_from_fields(kind: str, fields: dict) -> protocol.Message:
    if kind == "ECHO":
        return protocol.Echo(bytes.fromhex(fields["payload_hex"]))
    if kind == "BET":
        bets = [tuple(b) for b in fields["bets"]]
        return protocol.Bet(fields["agency"], fields["seq"], len(bets), protocol.bet_lines(bets))
    if kind == "ACK":
        return protocol.Ack(fields["agency"], fields["seq"])
    if kind == "FIN":
        return protocol.Fin(fields["agency"], fields["batches"])
    if kind == "FIN_ACK":
        return protocol.FinAck(fields["agency"])
    if kind == "WINNERS_QUERY":
        return protocol.WinnersQuery(fields["agency"])
    if kind == "WINNERS":
        return protocol.Winners(fields["agency"], fields["last"], tuple(fields["documents"]))
    if kind == "ERROR":
        return protocol.Error(ErrorCode(fields["code"]), fields["seq"], fields["reason"])
    raise AssertionError(kind)


def decode(raw: bytes) -> protocol.Message:
    view = memoryview(raw)
    position = 0

    def read_exact(n: int) -> bytes:
        nonlocal position
        if position + n > len(view):
            raise protocol.TruncatedFrame(f"wanted {n} bytes at {position}")
        position += n
        return bytes(view[position - n : position])

    message = protocol.read_frame(read_exact)
    assert position == len(raw), "trailing bytes after the frame"
    return message


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
    reason = protocol.bet_line_error(line)
    if vector["valid"]:
        assert reason is None
        protocol.validate_bets(line + b"\n", 1)  # the fast path agrees
    else:
        assert reason is not None and vector["reason"] in reason
        with pytest.raises(ProtocolError) as caught:
            protocol.validate_bets(line + b"\n", 1)
        assert caught.value.code is ErrorCode.INVALID_BET


def test_largest_vectors_fill_the_maximum_frame() -> None:
    sizes = {v["name"]: len(v["hex"]) // 2 for v in VECTORS["frames"]}
    assert sizes["echo_largest"] == protocol.MAX_FRAME == VECTORS["max_frame"]
    assert sizes["bet_largest"] == protocol.MAX_FRAME


def test_encoder_refuses_a_frame_over_the_maximum() -> None:
    with pytest.raises(ValueError):
        protocol.encode(protocol.Echo(b"x" * (protocol.MAX_PAYLOAD + 1)))


def test_header_is_refused_before_the_payload_is_read() -> None:
    reads: list[int] = []
    header = bytes.fromhex("0101ffffffff")

    def read_exact(n: int) -> bytes:
        reads.append(n)
        return header

    with pytest.raises(ProtocolError) as caught:
        protocol.read_frame(read_exact)
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
    with pytest.raises(ProtocolError) as caught:
        protocol.validate_bets(lines, 3)
    assert caught.value.code is ErrorCode.INVALID_BET
    assert caught.value.reason == "bet 2: birthdate"


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
            raw = bytearray([1, rng.randint(0, 9)]) + rng.randbytes(4)
            raw[2:6] = rng.randint(0, 64).to_bytes(4, "big")
            raw += rng.randbytes(rng.randint(0, 64))
        try:
            message = decode(bytes(raw))
        except (ProtocolError, protocol.TruncatedFrame, AssertionError):
            outcomes["refused"] += 1
        else:
            outcomes["ok"] += 1
            assert protocol.encode(message) == bytes(raw)  # what decodes re-encodes identically
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0
