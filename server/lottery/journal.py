"""The journal's records and the round's state they fold into (owns the format of journal.log).

The journal always starts with a checkpoint, the round's state as of a point where ``bets.csv``
was synced::

    checkpoint <agencies> <bets_end> <batches>
    agency <id> <stored> <chain> <last_first>   one per agency with bets
    batches <id> <count>                        one per agency with bets: its batches stored
    fin <id> <bets> <chain>                     one per recorded FIN

and goes on with one record per change since that checkpoint::

    batch <agency> <first> <count> <end> <chain>
    fin <agency> <bets> <chain>

A batch holds the agency's bets ``first .. first + count - 1``; bets.csv is ``end`` bytes after
it, and ``chain`` is the agency's chain after it (protocol.md): a CRC-32 of the agency's bet
lines, continued over the batch's from the chain before, so it also vouches for the batch's bytes
in bets.csv (recovery checks them with it). Chains are 8 hexadecimal digits, the rest decimal.
The journal is the only record of what is stored, so deduplication, the FIN barrier and the
round's agency count survive a restart. `JournalView` folds it into per-agency state whose size
does not grow with the bets.

Until 2026-12-05 a batch line also held a CRC-32 of the batch's bytes in bets.csv, before the
chain: a second CRC pass over every batch, for what the chain already says. Such a line is
refused as `OlderJournal`, never taken for damage and cut: the round it belongs to is finished
with the version that wrote it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

from .durable import StorageError
from .protocol import Bet

MAX_JOURNAL_LINE = 128  # longer than any record: a longer "line" is damage, not a record

# kind -> the base each value is written in: decimal, or hexadecimal for CRCs and chains
_BASES = {
    "checkpoint": (10, 10, 10),
    "agency": (10, 10, 16, 10),
    "fin": (10, 10, 16),
    "batch": (10, 10, 10, 10, 16),
    "batches": (10, 10),
}
_OLDER_BATCH = re.compile(rb"batch(?: [0-9]+){4} [0-9a-f]{8} [0-9a-f]{8}")  # with a CRC (see above)

# kind -> the line's format; hexadecimal values are 8 digits
_FORMATS = {
    kind: kind.encode() + b"".join(b" %08x" if base == 16 else b" %d" for base in bases) + b"\n"
    for kind, bases in _BASES.items()
}
_KINDS = {kind.encode(): kind for kind in _BASES}

# A run of batch lines exactly as _FORMATS writes them (decimals without leading zeros or sign,
# the chain as 8 lowercase hexadecimal digits), and the fields the fold needs from each. Such
# a run, nearly the whole of a journal, is folded in bulk (JournalView._fold_batch_run); any other
# line, and any batch line written otherwise, is folded line by line.
_DECIMAL = rb"(?:0|[1-9][0-9]{0,18})"
_BATCH_RUN = re.compile(rb"(?:batch " + b" ".join([_DECIMAL] * 4) + rb" [0-9a-f]{8}\n)++")
# A run shorter than this goes line by line: the bulk fold's fixed cost (about 4 us) is worth it
# from about three lines on (a batch line is about 40 bytes). Runs are that short when many
# agencies finish at once, each FIN line cutting the run of batch lines.
_BULK_BYTES = 4 * 40
_BATCH_FIELDS = re.compile(rb"batch ([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+) ([0-9a-f]{8})\n")


class OlderJournal(StorageError):
    """A journal line in the format of an older version (a batch line with a CRC): not damage, and
    not this version's to continue."""


@dataclass(frozen=True)
class JournalRecord:
    """One journal line; `values` are its integers in order."""

    kind: str  # "checkpoint", "agency", "batches", "fin" or "batch"
    values: tuple[int, ...]

    def encode(self) -> bytes:
        return _FORMATS[self.kind] % self.values

    @classmethod
    def parse(cls, line: bytes) -> JournalRecord:
        """The record in one line (without its newline); StorageError if it is not one."""
        kind, *fields = line.split(b" ")
        name = _KINDS.get(kind)
        if name is not None and len(_BASES[name]) == len(fields):
            try:
                values = tuple(map(int, fields, _BASES[name]))
            except ValueError:
                pass
            else:
                if min(values) >= 0:
                    return cls(name, values)
        if _OLDER_BATCH.fullmatch(line):
            raise OlderJournal(
                f"journal line {line[:80]!r} is a batch line of an older version (with a CRC before the chain):"
                " finish this round with the version that wrote it, or start a new round in an empty STORAGE_DIR"
            )
        raise StorageError(f"corrupt journal line {line[:80]!r}")


def batch_record(bet: Bet, end: int, chain_after: int) -> JournalRecord:
    return JournalRecord("batch", (bet.agency, bet.first, bet.count, end, chain_after))


def fin_record(agency: int, bets: int, chain: int) -> JournalRecord:
    return JournalRecord("fin", (agency, bets, chain))


class AgencyState(NamedTuple):
    """What is stored of one agency: bets 1..`stored`, their `chain`, the last batch's first.

    A named tuple, not a frozen dataclass: every process makes one per batch stored by any
    process (the fold), and a frozen dataclass costs twice as much to make (0.41 against 0.20 us)."""

    stored: int = 0
    chain: int = 0
    last_first: int = 0


NOTHING_STORED = AgencyState()


@dataclass
class JournalView:
    """The round's state as the journal tells it; rebuilt from the file, never shared in memory.

    Its size depends on the number of agencies only, not on the batches stored."""

    offset: int = 0  # bytes of journal.log folded in
    agencies: int = 0  # the round's agency count (from the checkpoint)
    bets_end: int = 0  # size bets.csv must have
    batches: int = 0  # batches stored in the round
    agency_states: dict[int, AgencyState] = field(default_factory=dict)
    agency_batches: dict[int, int] = field(default_factory=dict)  # agency -> batches stored
    fins: dict[int, tuple[int, int]] = field(default_factory=dict)  # agency -> (bets, chain)
    # Of the agencies in `fins` (which only `apply` changes), how many are 1 or more, and the
    # largest: `finished` then counts in constant time when every FIN is of the round. The
    # barrier asks at each look; counting each time was 7 % of the central's CPU with 1,000
    # agencies (a look per FIN, each counting every FIN so far).
    _fins_positive: int = field(default=0, repr=False, compare=False)
    _fins_max: int = field(default=0, repr=False, compare=False)

    def state(self, agency: int) -> AgencyState:
        return self.agency_states.get(agency, NOTHING_STORED)

    def fold(self, data: bytes) -> int:
        """Fold in the complete lines at the start of `data`, the journal's bytes from `offset`
        on, and advance `offset` past them; returns the bytes consumed.

        Batch lines, nearly all of a journal, are folded without building a record (every
        process folds the batches the others store): a run of them as the central writes them
        in bulk, any other one alone with JournalRecord.parse's checks."""
        consumed = 0
        short_until = 0  # the end of a run too short to fold in bulk: its lines go one by one
        while True:
            if consumed >= short_until and (run := _BATCH_RUN.match(data, consumed)) is not None:
                if run.end() - consumed >= _BULK_BYTES:
                    self._fold_batch_run(_BATCH_FIELDS.findall(data, consumed, run.end()))
                    self.offset += run.end() - consumed
                    consumed = run.end()
                else:
                    short_until = run.end()
            newline = data.find(b"\n", consumed)
            if newline < 0:
                return consumed
            line = data[consumed:newline]
            fields = line.split(b" ")
            if fields[0] == b"batch" and len(fields) == 6:
                try:
                    agency, first, count, end = int(fields[1]), int(fields[2]), int(fields[3]), int(fields[4])
                    chain = int(fields[5], 16)
                except ValueError:
                    raise StorageError(f"corrupt journal line {line[:80]!r}") from None
                if min(agency, first, count, end, chain) < 0:
                    raise StorageError(f"corrupt journal line {line[:80]!r}")
                self._apply_batch(agency, first, count, end, chain)
                self.offset += newline + 1 - consumed
            else:
                self.apply(JournalRecord.parse(line), newline + 1 - consumed)
            consumed = newline + 1

    def apply(self, record: JournalRecord, size: int) -> None:
        """Fold in one record that took `size` bytes of the journal."""
        values = record.values
        if record.kind == "batch":
            agency, first, count, end, chain = values
            self._apply_batch(agency, first, count, end, chain)
        elif record.kind == "fin":
            agency = values[0]
            if agency not in self.fins:
                self._fins_positive += agency >= 1
                self._fins_max = max(self._fins_max, agency)
            self.fins[agency] = (values[1], values[2])
        elif record.kind == "agency":
            self.agency_states[values[0]] = AgencyState(*values[1:])
        elif record.kind == "batches":
            self.agency_batches[values[0]] = values[1]
        else:  # a checkpoint starts the file: the state lines after it rebuild the rest
            self.agencies, self.bets_end, self.batches = values
            self.agency_states.clear()
            self.agency_batches.clear()
            self.fins.clear()
            self._fins_positive = self._fins_max = 0
        self.offset += size

    def _fold_batch_run(self, rows: list[tuple[bytes, bytes, bytes, bytes, bytes]]) -> None:
        """Fold in a run of batch lines, given as (agency, first, count, end, chain) fields: the
        same state as _apply_batch on each in turn, for about a third of the cost (0.7 against
        2.0 us a line). Only each agency's last batch sets its state; the run's counts are
        made at C speed. A decimal is written one way only, so its bytes name the agency."""
        per_agency = Counter(map(itemgetter(0), rows))
        last = dict(zip(map(itemgetter(0), rows), rows, strict=True))  # a later row replaces an earlier one
        for agency_field, batches in per_agency.items():
            _, first_field, count, _, chain = last[agency_field]
            agency, first = int(agency_field), int(first_field)
            self.agency_states[agency] = AgencyState(first + int(count) - 1, int(chain, 16), first)
            self.agency_batches[agency] = self.agency_batches.get(agency, 0) + batches
        self.bets_end = int(rows[-1][3])
        self.batches += len(rows)

    def _apply_batch(self, agency: int, first: int, count: int, end: int, chain: int) -> None:
        """A batch of `agency`, bets `first` .. `first + count - 1`, ending bets.csv at `end`."""
        self.agency_states[agency] = AgencyState(first + count - 1, chain, first)
        self.agency_batches[agency] = self.agency_batches.get(agency, 0) + 1
        self.bets_end = end
        self.batches += 1

    def checkpoint(self) -> bytes:
        """The journal's content for a checkpoint of this state."""
        records = [JournalRecord("checkpoint", (self.agencies, self.bets_end, self.batches))]
        records += [
            JournalRecord("agency", (a, s.stored, s.chain, s.last_first)) for a, s in sorted(self.agency_states.items())
        ]
        records += [JournalRecord("batches", (a, count)) for a, count in sorted(self.agency_batches.items())]
        records += [fin_record(a, *fin) for a, fin in sorted(self.fins.items())]
        return b"".join(record.encode() for record in records)

    def finished(self, agencies: int) -> int:
        """How many of agencies 1..`agencies` have a FIN."""
        if self._fins_max <= agencies:
            return self._fins_positive
        return sum(1 for agency in self.fins if 1 <= agency <= agencies)

    def waiting_for(self, agencies: int) -> list[int]:
        """The agencies of 1..`agencies` without a FIN, in order."""
        return [agency for agency in range(1, agencies + 1) if agency not in self.fins]
