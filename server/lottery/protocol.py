"""The wire protocol: frame layout, message dataclasses, their encoders and decoders.

This module owns the bytes of every frame; docs/protocol.md specifies them and
testdata/protocol_vectors.json pins them. The rules of a bet line live in bets.py. Nothing here
touches a socket: the central's connections parse headers with `parse_header` on their own
buffers and hand whole payloads to `decode_payload`.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field

from .bets import InvalidBatch, validate_bets

VERSION = 2
HEADER = struct.Struct(">BBI")
HEADER_SIZE = HEADER.size  # 6
MAX_FRAME = 8192
MAX_PAYLOAD = MAX_FRAME - HEADER_SIZE  # 8186
MAX_REASON = 255

_U32 = struct.Struct(">I")
BET_HEAD = struct.Struct(">IIHI")  # agency, first, count, chain
_PAIR = struct.Struct(">II")  # ACK (agency, stored)
_ACK_FRAME = struct.Struct(">BBIII")  # a whole ACK frame: the header, then _PAIR
_FIN = struct.Struct(">III")  # agency, bets, chain
_RESUME = struct.Struct(">IIIB")  # agency, stored, chain, finished
_WINNERS_HEAD = struct.Struct(">IBH")  # agency, last, count
_ERROR_HEAD = struct.Struct(">HI")  # code, position
BET_HEADER_SIZE = BET_HEAD.size  # 14
MAX_BETS_BYTES = MAX_PAYLOAD - BET_HEADER_SIZE  # 8172
WINNERS_HEADER_SIZE = _WINNERS_HEAD.size  # 7


class MsgType(enum.IntEnum):
    ECHO = 0x01
    BET = 0x02
    ACK = 0x03
    FIN = 0x04
    FIN_ACK = 0x05
    WINNERS_QUERY = 0x06
    WINNERS = 0x07
    ERROR = 0x08
    HELLO = 0x09
    RESUME = 0x0A


class ErrorCode(enum.IntEnum):
    UNSUPPORTED_VERSION = 1
    UNKNOWN_TYPE = 2
    FRAME_TOO_LARGE = 3
    MALFORMED = 4
    INVALID_BET = 5
    UNKNOWN_AGENCY = 6
    SEQUENCE_GAP = 7
    AGENCY_FINISHED = 8
    DUPLICATE_FIN = 9
    IDLE_TIMEOUT = 10
    SHUTTING_DOWN = 11
    INTERNAL_ERROR = 12
    ROUND_CLOSED = 13
    BETS_MISMATCH = 14
    AGENCY_MISMATCH = 15


# Codes after which the framing can no longer be trusted, or the central is leaving: the
# connection is closed once the ERROR is sent.
CLOSING_CODES = frozenset(
    {
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.INTERNAL_ERROR,
    }
)


class ProtocolError(Exception):
    """A frame or payload that breaks the protocol; `code` is the ERROR code to answer with and
    `position` the `first` of the refused BET (0 for other messages)."""

    def __init__(self, code: ErrorCode, reason: str, position: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.position = position



# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Echo:
    payload: bytes = b""


@dataclass(frozen=True)
class Bet:
    """One batch: the agency's bets `first` .. `first + count - 1` (positions among its valid
    bets, from 1); `chain` is the CRC-32 chain of its bets before `first`; `bets` is the raw,
    already validated `lines` block of the payload."""

    agency: int
    first: int
    count: int
    chain: int
    bets: bytes

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    @property
    def chain_after(self) -> int:
        """The agency's chain after this batch. Computed on each use (a CRC of at most 8 kB, a
        microsecond or two); the storage reads it once per batch. functools.cached_property
        would cost more than the CRC: it takes a lock on every read in Python 3.11."""
        return chain(self.bets, self.chain)


@dataclass(frozen=True)
class Ack:
    """The agency's bets 1..`stored` are durably stored (`stored` is the batch's last position)."""

    agency: int
    stored: int


@dataclass(frozen=True)
class Fin:
    """The agency has sent all its bets: `bets` of them, whose chain is `chain`."""

    agency: int
    bets: int
    chain: int


@dataclass(frozen=True)
class FinAck:
    agency: int


@dataclass(frozen=True)
class WinnersQuery:
    agency: int


@dataclass(frozen=True)
class Hello:
    agency: int


@dataclass(frozen=True)
class Resume:
    """What the central holds of an agency: its bets 1..`stored`, their chain, and whether its
    FIN is recorded."""

    agency: int
    stored: int
    chain: int
    finished: bool


@dataclass(frozen=True)
class Winners:
    agency: int
    last: bool
    documents: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Error:
    code: ErrorCode
    position: int = 0
    reason: str = ""


Message = Echo | Bet | Ack | Fin | FinAck | WinnersQuery | Winners | Error | Hello | Resume


def chain(lines: bytes, previous: int = 0) -> int:
    """The CRC-32 chain of an agency's bets: the CRC-32 (IEEE) of all its bet lines so far, in
    order, continued from `previous` (the chain of the bets before them; 0 before the first)."""
    return zlib.crc32(lines, previous)


# --- encoding -------------------------------------------------------------------------------


def frame(msg_type: MsgType, payload: bytes) -> bytes:
    """One whole frame; refuses to build one larger than MAX_FRAME."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(VERSION, msg_type, len(payload)) + payload


def ack_frame(agency: int, stored: int) -> bytes:
    """encode(Ack(agency, stored)), made in one step: the central answers every batch with one."""
    return _ACK_FRAME.pack(VERSION, MsgType.ACK, _PAIR.size, agency, stored)


def encode(msg: Message) -> bytes:
    if isinstance(msg, Echo):
        return frame(MsgType.ECHO, msg.payload)
    if isinstance(msg, Bet):
        return frame(MsgType.BET, BET_HEAD.pack(msg.agency, msg.first, msg.count, msg.chain) + msg.bets)
    if isinstance(msg, Ack):
        return frame(MsgType.ACK, _PAIR.pack(msg.agency, msg.stored))
    if isinstance(msg, Fin):
        return frame(MsgType.FIN, _FIN.pack(msg.agency, msg.bets, msg.chain))
    if isinstance(msg, Hello):
        return frame(MsgType.HELLO, _U32.pack(msg.agency))
    if isinstance(msg, Resume):
        return frame(MsgType.RESUME, _RESUME.pack(msg.agency, msg.stored, msg.chain, 1 if msg.finished else 0))
    if isinstance(msg, FinAck):
        return frame(MsgType.FIN_ACK, _U32.pack(msg.agency))
    if isinstance(msg, WinnersQuery):
        return frame(MsgType.WINNERS_QUERY, _U32.pack(msg.agency))
    if isinstance(msg, Winners):
        documents = "".join(d + "\n" for d in msg.documents).encode("ascii")
        head = _WINNERS_HEAD.pack(msg.agency, 1 if msg.last else 0, len(msg.documents))
        return frame(MsgType.WINNERS, head + documents)
    if isinstance(msg, Error):
        reason = msg.reason.encode("utf-8")[:MAX_REASON].decode("utf-8", "ignore").encode("utf-8")
        return frame(MsgType.ERROR, _ERROR_HEAD.pack(msg.code, msg.position) + reason)
    raise TypeError(f"not a message: {msg!r}")


def winners_pages(agency: int, documents: list[str]) -> list[bytes]:
    """The WINNERS frames answering `agency`: as many pages as needed, the last flagged."""
    room = MAX_PAYLOAD - WINNERS_HEADER_SIZE
    pages: list[list[str]] = [[]]
    used = 0
    for document in documents:
        size = len(document) + 1
        if used + size > room:
            pages.append([])
            used = 0
        pages[-1].append(document)
        used += size
    return [
        encode(Winners(agency, i == len(pages) - 1, tuple(page))) for i, page in enumerate(pages)
    ]


# --- decoding -------------------------------------------------------------------------------


def parse_header(header: bytes | bytearray) -> tuple[int, int]:
    """(type, length) of the 6-byte header at the start of `header`; raises ProtocolError before
    any payload is read."""
    version, msg_type, length = HEADER.unpack_from(header)
    if version != VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"version {version}, want {VERSION}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"length {length} exceeds {MAX_PAYLOAD}")
    return msg_type, length


def _fixed(payload: bytes, layout: struct.Struct, name: str) -> tuple[int, ...]:
    if len(payload) != layout.size:
        raise ProtocolError(
            ErrorCode.MALFORMED, f"{name} payload is {len(payload)} bytes, want {layout.size}"
        )
    return layout.unpack(payload)


def _positive(name: str, value: int) -> int:
    if value == 0:
        raise ProtocolError(ErrorCode.MALFORMED, f"{name} must not be 0")
    return value


def _decode_lines(body: bytes, count: int, name: str) -> tuple[str, ...]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(ErrorCode.MALFORMED, f"{name} is not UTF-8") from err
    if text.count("\n") != count or (text and not text.endswith("\n")):
        raise ProtocolError(ErrorCode.MALFORMED, f"{name} does not hold {count} lines")
    return tuple(text.split("\n")[:count])


def decode_payload(msg_type: int, payload: bytes) -> Message:
    """The message in one payload. BET batches are validated here, bet by bet."""
    if msg_type == MsgType.ECHO:
        return Echo(bytes(payload))
    if msg_type == MsgType.BET:
        if len(payload) < BET_HEADER_SIZE:
            raise ProtocolError(ErrorCode.MALFORMED, f"BET payload is {len(payload)} bytes")
        agency, first, count, previous = BET_HEAD.unpack_from(payload)
        _positive("agency", agency)
        _positive("first", first)
        _positive("count", count)
        if first + count - 1 > 0xFFFFFFFF:
            raise ProtocolError(ErrorCode.MALFORMED, f"bets {first}.. {count} pass position 4294967295", first)
        bets = bytes(payload[BET_HEADER_SIZE:])
        try:
            validate_bets(bets, count)
        except InvalidBatch as err:
            code = ErrorCode.MALFORMED if err.malformed else ErrorCode.INVALID_BET
            raise ProtocolError(code, err.reason, first) from None
        return Bet(agency, first, count, previous, bets)
    if msg_type == MsgType.ACK:
        agency, stored = _fixed(payload, _PAIR, "ACK")
        return Ack(_positive("agency", agency), _positive("stored", stored))
    if msg_type == MsgType.FIN:
        agency, announced, fin_chain = _fixed(payload, _FIN, "FIN")
        return Fin(_positive("agency", agency), announced, fin_chain)
    if msg_type == MsgType.HELLO:
        (agency,) = _fixed(payload, _U32, "HELLO")
        return Hello(_positive("agency", agency))
    if msg_type == MsgType.RESUME:
        agency, stored, resume_chain, finished = _fixed(payload, _RESUME, "RESUME")
        if finished > 1:
            raise ProtocolError(ErrorCode.MALFORMED, f"RESUME finished is {finished}")
        return Resume(_positive("agency", agency), stored, resume_chain, bool(finished))
    if msg_type == MsgType.FIN_ACK:
        return FinAck(*_fixed(payload, _U32, "FIN_ACK"))
    if msg_type == MsgType.WINNERS_QUERY:
        (agency,) = _fixed(payload, _U32, "WINNERS_QUERY")
        return WinnersQuery(_positive("agency", agency))
    if msg_type == MsgType.WINNERS:
        if len(payload) < WINNERS_HEADER_SIZE:
            raise ProtocolError(ErrorCode.MALFORMED, f"WINNERS payload is {len(payload)} bytes")
        agency, last, count = _WINNERS_HEAD.unpack_from(payload)
        if last > 1:
            raise ProtocolError(ErrorCode.MALFORMED, f"WINNERS last is {last}")
        documents = _decode_lines(bytes(payload[WINNERS_HEADER_SIZE:]), count, "documents")
        return Winners(agency, bool(last), documents)
    if msg_type == MsgType.ERROR:
        if len(payload) < _ERROR_HEAD.size:
            raise ProtocolError(ErrorCode.MALFORMED, f"ERROR payload is {len(payload)} bytes")
        code, position = _ERROR_HEAD.unpack_from(payload)
        try:
            code = ErrorCode(code)
            reason = bytes(payload[_ERROR_HEAD.size :]).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as err:
            raise ProtocolError(ErrorCode.MALFORMED, "bad ERROR payload") from err
        return Error(code, position, reason)
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {msg_type}")

