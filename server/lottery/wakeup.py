"""The self-pipe that turns a signal into a selector event (one per process).

`signal.set_wakeup_fd` makes the interpreter write a byte to the pipe whenever a signal with a
Python handler arrives, so a `select` blocked in the main loop returns and the loop acts on what
the handler recorded. Handlers themselves only record.
"""

from __future__ import annotations

import os
import signal


class WakeupPipe:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        """The end to register in a selector."""
        return self._read

    def install(self) -> None:
        signal.set_wakeup_fd(self._write)

    def drain(self) -> None:
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Detach from the signal machinery (if installed) and close both ends."""
        if signal.set_wakeup_fd(-1) not in (-1, self._write):
            raise RuntimeError("another wake-up fd was installed")
        os.close(self._read)
        os.close(self._write)
