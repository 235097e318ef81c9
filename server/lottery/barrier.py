"""The draw barrier, the draw's announcement and the journal's checkpoints: the supervisor's
work on the storage (it is the only process that draws and checkpoints).

**The barrier is a condition on the journal, not a message.** It is re-evaluated whenever the
journal may have changed: a worker's nudge, or a changed size or inode seen on the supervisor's
tick. Until every agency 1..AGENCIES has a FIN, each look also scans the bets stored since the
last one for winners (draw.Scan: the draw's reading, done ahead). Then the storage is synced (a
FIN appended by a worker killed before its own sync becomes durable here), and drawn (draw.py),
reading only the bets stored since the last look. A lost nudge or a killed worker only delays
the draw by a tick. The supervisor never waits for the append lock: when another process holds
it, the check is tried again next tick.

**A barrier that explains itself.** Once the first FIN is recorded and until the draw, every
STATUS_INTERVAL seconds one line says how many agencies are ready and which ones the draw waits
for: ``action: sorteo | result: in_progress | agencias_listas: K/N | esperando: 2,4``.

**An end-of-run report.** After the draw, and at every start on a drawn round, one line per
agency (``action: reporte | result: success | agencia: A | apuestas: B | batches: K | ganadores:
W``) and one total line, from the journal's per-agency state and winners.csv: streamed, never
loading a bet.

**The draw is announced once per round, even across a crash.** `action: sorteo | result: success`
is logged once the draw's result is durable; the supervisor then tells the workers, which answer
the held winners queries, and only then (`after_draw`) is the empty file ``announced`` created and
synced and the report logged: the agencies' answers do not wait for either. A central that starts
on a drawn round without that file (it was killed between the draw and the marker) announces it
then; with the file, never again. (A crash in the moment between the line and the marker's sync
would log it twice; the other order could never log it.)
"""

from __future__ import annotations

import logging
import os

from . import draw
from .config import ServerConfig
from .durable import WriteFailed, sync_dir
from .files import ANNOUNCED_FILE, BETS_FILE
from .journal import JournalView
from .storage import Storage

log = logging.getLogger(__name__)

COMPACT_BYTES = 1 << 20  # a journal past this size is rewritten as a checkpoint
MAX_LISTED = 20  # agencies named in one barrier line; the rest are counted


class Barrier:
    def __init__(self, config: ServerConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self.drawn = draw.draw_done(config.storage_dir)
        self.announced = (config.storage_dir / ANNOUNCED_FILE).exists()
        self.seen: tuple[int, int] | None = None  # the journal's (inode, size) last evaluated
        self.view: JournalView = storage.view  # the last view folded
        self.scan = draw.Scan()  # the winners among the bets stored so far, found ahead of the draw
        self.next_status = 0.0  # monotonic time of the next barrier line

    def at_start(self) -> None:
        """At start on a drawn round: announce the draw if it never was, and report."""
        if not self.drawn:
            return
        if not self.announced:
            winners = sum(len(documents) for documents in draw.load_winners(self.config.storage_dir).values())
            self._announce(winners, self.config.agencies)
        self.report()

    def check(self, force: bool = False) -> bool:
        """Draw if every agency has a durable FIN; True if this call drew (and logged the
        announcement): tell the workers, then call `after_draw`. Raises SyncFailed."""
        if self.drawn:
            if not self.announced:
                self._mark_announced()  # the marker failed before: try again, without a second line
            return False
        identity = self.storage.journal_identity()
        if identity == self.seen and not force:
            return False
        view = self.storage.try_refresh()
        if view is None:
            self.seen = None  # another process holds the lock: look again next tick
            return False
        self.seen, self.view = identity, view
        finished = view.finished(self.config.agencies)
        if finished < self.config.agencies:
            try:
                self.scan.advance(self.config.storage_dir / BETS_FILE, view.bets_end, draw.SCAN_AHEAD)
            except OSError as err:  # the draw reads these bets again
                log.warning("action: draw_scan | result: fail | error: %s", err)
            return False
        try:
            self.storage.sync()  # a FIN appended by a worker that died before its sync is made durable
            winners = draw.run_draw(self.config.storage_dir, view.bets_end, self.scan)
        except (OSError, WriteFailed) as err:  # e.g. a full disk: retried on the next tick
            log.error("action: sorteo | result: fail | error: %s", err)
            self.seen = None
            return False
        self.drawn = True
        self._log_announcement(winners, finished)
        return True

    def after_draw(self) -> None:
        """What follows the draw once the workers know: the marker that it was announced, and
        the report."""
        self._mark_announced()
        self.report()

    def log_progress(self, now: float) -> None:
        """The barrier line, every STATUS_INTERVAL seconds from the first FIN until the draw."""
        interval = self.config.status_interval
        if self.drawn or not interval or now < self.next_status or not self.view.fins:
            return
        self.next_status = now + interval
        agencies = self.config.agencies
        waiting = self.view.waiting_for(agencies)
        listed = ",".join(map(str, waiting[:MAX_LISTED]))
        if len(waiting) > MAX_LISTED:
            listed += f" (+{len(waiting) - MAX_LISTED} more)"
        log.info(
            "action: sorteo | result: in_progress | agencias_listas: %d/%d | esperando: %s",
            agencies - len(waiting),
            agencies,
            listed,
        )

    def report(self) -> None:
        """One line per agency and a total: bets, batches and winners of the round."""
        view = self.storage.try_refresh() or self.view
        winners = draw.load_winners(self.config.storage_dir)
        bets = batches = won = 0
        for agency in range(1, self.config.agencies + 1):
            stored, count = view.state(agency).stored, view.agency_batches.get(agency, 0)
            mine = len(winners.get(agency, ()))
            log.info(
                "action: reporte | result: success | agencia: %d | apuestas: %d | batches: %d | ganadores: %d",
                agency,
                stored,
                count,
                mine,
            )
            bets, batches, won = bets + stored, batches + count, won + mine
        log.info(
            "action: reporte | result: success | agencias: %d | apuestas: %d | batches: %d | ganadores: %d",
            self.config.agencies,
            bets,
            batches,
            won,
        )

    def _announce(self, winners: int, agencies: int) -> None:
        self._log_announcement(winners, agencies)
        self._mark_announced()

    @staticmethod
    def _log_announcement(winners: int, agencies: int) -> None:
        log.info("action: sorteo | result: success")
        log.info("action: draw_result | result: success | winners: %d | agencies: %d", winners, agencies)

    def _mark_announced(self) -> None:
        try:
            os.close(os.open(self.config.storage_dir / ANNOUNCED_FILE, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as err:  # a full disk: tried again on the next tick
            log.warning("action: sorteo_announced | result: fail | error: %s", err.strerror or err)
            return
        sync_dir(self.config.storage_dir)
        self.announced = True

    def checkpoint_if_large(self) -> None:
        """Rewrite the journal as a checkpoint once it passes COMPACT_BYTES: restart time and every
        worker's start then read a bounded journal, whatever the number of batches stored.
        Raises SyncFailed."""
        if self.storage.journal_identity()[1] < COMPACT_BYTES:
            return
        try:
            sizes = self.storage.try_compact()
        except (OSError, WriteFailed) as err:  # e.g. a full disk: the journal stays as it is
            log.warning("action: checkpoint | result: fail | error: %s", err)
            return
        if sizes is not None:  # else another process holds the lock: next tick
            log.info("action: checkpoint | result: success | journal_bytes_before: %d | journal_bytes: %d", *sizes)
