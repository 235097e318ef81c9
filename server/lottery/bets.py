"""The bet line: its canonical encoding and its validation (owns the rules docs/protocol.md states
for the `lines` block of a BET, and that the agency's internal/bets applies before sending).

Nothing here knows frames or sockets: protocol.decode_payload calls `validate_bets` on a BET's
lines and turns an `InvalidBatch` into the ERROR code it names. testdata/protocol_vectors.json
pins every rule (its `bet_lines`), read by the Go and the Python tests alike.
"""

from __future__ import annotations

import re


class InvalidBatch(ValueError):
    """A BET's lines break the rules: `malformed` for the framing of the lines (MALFORMED), else
    one bet is invalid (INVALID_BET); `reason` says which and why."""

    def __init__(self, reason: str, malformed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.malformed = malformed


# A bet line is one RFC 4180 record of five fields. A name may hold any UTF-8 text without a
# control character; it is written quoted ("..." with every " doubled) exactly when it holds a
# comma or a double quote, and as is otherwise, so every bet has exactly one encoding (its chain
# and its bets.csv line follow from it). Documents, dates and numbers are never quoted.

# The quantifiers are possessive ({m,n}+, ++): a name holds no comma and a number no separator, so
# a field never has a character to give back to the next and backtracking could never find another
# match; without its bookkeeping the batch pattern costs about 15 % less.
_DIGITS = rb"[0-9]{1,10}+"
# Month-aware day ranges, and 02-29 in leap years only (divisible by 4, and by 400 if by 100):
# one pattern settles every date, so a batch needs no second pass for February 29.
_LEAP_YEAR = rb"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_DATE = (
    rb"(?:(?!0000)[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    rb"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rb"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    rb"|(?!0000)" + _LEAP_YEAR + rb"-02-29)"
)
# The common case, a batch without any quoted name, is settled in two passes (_plain_batch_valid):
# deleting every byte a field may hold (all but the comma, the double quote and the control
# characters, the line end among them) must leave exactly ",,,,\n" per line. That one pass at C
# speed settles the line count, the five fields of every line, and that no field holds a quote or
# a control character; the pattern then checks the fields themselves, its names only "no comma"
# (a single negated character: the regular expression engine's fastest loop).
_FIELD_BYTES = bytes(b for b in range(0x20, 0x100) if b not in b',"\x7f')
_PLAIN_SEPARATORS = b",,,,\n"
_PLAIN_LINE = rb"[^,]{1,100}+,[^,]{1,100}+," + _DIGITS + b"," + _DATE + b"," + _DIGITS + b"\n"
_PLAIN_LINES_RE = re.compile(b"(?:" + _PLAIN_LINE + b")++")
_C1_RE = re.compile(rb"\xc2[\x80-\x9f]")  # U+0080..U+009F, the C1 control characters, in UTF-8
_NAME_RE = re.compile(rb'[^\x00-\x1f\x7f]{1,100}')
_DIGITS_RE = re.compile(_DIGITS)
_DATE_RE = re.compile(_DATE)
_FIELD_RE = re.compile(rb'"((?:[^"]|"")*)"|([^,"]*)')  # one field: quoted, or plain
FIELD_NAMES = ("first_name", "last_name", "document", "birthdate", "number")


def split_record(line: bytes) -> list[tuple[bytes, bool]] | None:
    """The fields of one RFC 4180 record (without its line end) as (value, was quoted); None
    when its quoting is broken (an unclosed quote, a quote inside a plain field, text after a
    closing quote)."""
    fields: list[tuple[bytes, bool]] = []
    position = 0
    while True:
        match = _FIELD_RE.match(line, position)
        assert match is not None  # the plain alternative matches the empty string
        quoted = match.group(1) is not None
        fields.append((match.group(1).replace(b'""', b'"') if quoted else match.group(2), quoted))
        position = match.end()
        if position == len(line):
            return fields
        if line[position] != 0x2C:  # ","
            return None
        position += 1


def _name_error(value: bytes, quoted: bool) -> bool:
    """Whether a name breaks its rules: 1 to 100 bytes, no control character, quoted exactly
    when it holds a comma or a double quote."""
    if not _NAME_RE.fullmatch(value) or _C1_RE.search(value):
        return True
    return quoted != (b"," in value or b'"' in value)


def bet_line_error(line: bytes) -> str | None:
    """Why one bet line (without its newline) is invalid, or None if it is valid."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    fields = split_record(line)
    if fields is None:
        return "quoting"
    if len(fields) != len(FIELD_NAMES):
        return f"{len(fields)} fields, want {len(FIELD_NAMES)}"
    for name, (value, quoted) in zip(FIELD_NAMES[:2], fields[:2], strict=True):
        if _name_error(value, quoted):
            return name
    patterns = (_DIGITS_RE, _DATE_RE, _DIGITS_RE)
    for name, pattern, (value, quoted) in zip(FIELD_NAMES[2:], patterns, fields[2:], strict=True):
        if quoted or not pattern.fullmatch(value):
            return name
    return None


def _plain_batch_valid(bets: bytes, count: int) -> bool:
    """Whether `bets` is `count` valid bet lines without a quoted name (the fast path: False
    also for a batch it does not settle, which the rules then check line by line)."""
    separators = bets.translate(None, _FIELD_BYTES)
    if len(separators) != len(_PLAIN_SEPARATORS) * count or separators != _PLAIN_SEPARATORS * count:
        return False  # (the length first: `count` is the peer's, the product is then at most 8 kB)
    if _PLAIN_LINES_RE.fullmatch(bets) is None:
        return False
    if b"\xc2" in bets and _C1_RE.search(bets) is not None:  # memchr first: C1 is rare
        return False
    try:
        bets.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def validate_bets(bets: bytes, count: int) -> None:
    """Raise InvalidBatch unless `bets` is exactly `count` valid bet lines.

    The fast path settles a valid batch without quotes; any other batch, and every refusal, is
    decided by the rules line by line.
    """
    if _plain_batch_valid(bets, count):
        return
    lines = bets.count(b"\n")
    if not bets.endswith(b"\n"):
        raise InvalidBatch("the batch does not end with a newline", malformed=True)
    if lines != count:
        raise InvalidBatch(f"count is {count} but the batch has {lines} lines", malformed=True)
    for number, line in enumerate(bets.split(b"\n")[:count], start=1):
        reason = bet_line_error(line)
        if reason is not None:
            raise InvalidBatch(f"bet {number}: {reason}", malformed=False)


def bet_line(fields: tuple[str, str, str, str, str]) -> bytes:
    """The canonical bet line (with its newline) of five field values."""
    out = []
    for value in fields:
        if "," in value or '"' in value:
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return (",".join(out) + "\n").encode("utf-8")
