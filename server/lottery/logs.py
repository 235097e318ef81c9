"""Log output: one `<date> <time> <LEVEL> action: ... | result: ...` line per event on stdout.

Several processes share stdout, so each record is written unbuffered, with os.write: nothing
sits in a buffer that a fork would duplicate, and a record of up to PIPE_BUF (4096) bytes goes out
in one write(2), which the kernel keeps whole on a pipe (Docker's log driver reads one), so such
lines never interleave. A longer record (none of the contract's lines is that long) may be
written in pieces, and another process's line could then fall between them.

The line is made by `LineFormatter` rather than logging.Formatter's generic machinery: the
central logs a line per batch stored, and this cuts what a line costs by a third (5.5 to 3.7 us,
the write included; holding a loop turn's lines for one write(2) was measured too: no gain).
"""

from __future__ import annotations

import logging
import os
import time

FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class LineFormatter(logging.Formatter):
    """FORMAT, made directly: the date and time are formatted once per second, and the generic
    style machinery (a dict lookup per field) is skipped. Its output is logging.Formatter's with
    FORMAT and DATE_FORMAT, exceptions and stacks included (tests/test_logs.py compares them)."""

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime(DATE_FORMAT, self.converter(record.created))
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        line = f"{record.asctime} {record.levelname} {record.message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class FdHandler(logging.Handler):
    """Writes each formatted record, newline included, with os.write to a file descriptor (one
    call unless the record is longer than the descriptor takes at once)."""

    def __init__(self, fd: int = 1) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            while data:
                data = data[os.write(self.fd, data) :]
        except Exception:  # noqa: BLE001 - logging must never take the server down
            self.handleError(record)


def setup(level: str = "INFO", fd: int = 1) -> None:
    """Log at `level` and above, one line per record, to `fd` (stdout)."""
    # FORMAT uses neither the caller's frame nor the thread or process names, so they are not
    # collected for every record (the logging HOWTO, "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = FdHandler(fd)
    handler.setFormatter(LineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
