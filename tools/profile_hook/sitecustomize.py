"""Profiling hook for the central (owns tools/profile_hook/): Python imports `sitecustomize` from
sys.path at start, and tools/bench.py --profile starts the central with this directory first on
its PYTHONPATH and LOTTERY_PROFILE_DIR naming an existing output directory. Without that variable
this module does nothing.

With it, the process runs under cProfile with time.process_time as its timer (CPU time: time spent
waiting in select or fsync does not count) from its start. A process forked from it (a worker)
drops the profile it inherited and starts its own. Each writes `<role>-<pid>.prof` into the
directory as it ends: the supervisor (the process the interpreter started) at interpreter exit, a
worker when it calls os._exit (a forked worker ends with os._exit and never reaches the
interpreter's exit, so os._exit is wrapped). A process killed by a signal writes nothing.

It shadows any other sitecustomize module, on the central's processes only.
"""

from __future__ import annotations

import atexit
import cProfile
import os
import time
from collections.abc import Callable


class _Profiling:
    """This process's profiler and where its profile goes."""

    def __init__(self, directory: str, real_exit: Callable[[int], object]) -> None:
        self.directory = directory
        self.real_exit = real_exit
        self.role = "supervisor"
        self.written = False
        self.profiler = cProfile.Profile(time.process_time)

    def start(self) -> None:
        self.profiler.enable()

    def restart_in_child(self) -> None:
        self.profiler.disable()
        self.role, self.written = "worker", False
        self.profiler = cProfile.Profile(time.process_time)
        self.profiler.enable()

    def write(self) -> None:
        if self.written:
            return
        self.written = True
        self.profiler.disable()
        self.profiler.dump_stats(os.path.join(self.directory, f"{self.role}-{os.getpid()}.prof"))

    def exit(self, code: int) -> None:
        """os._exit, after writing the profile (a failure to write it does not keep the process alive)."""
        try:
            self.write()
        finally:
            self.real_exit(code)


def _install(directory: str) -> None:
    profiling = _Profiling(directory, os._exit)
    os._exit = profiling.exit  # type: ignore[assignment]
    os.register_at_fork(after_in_child=profiling.restart_in_child)
    atexit.register(profiling.write)
    profiling.start()


_directory = os.environ.get("LOTTERY_PROFILE_DIR")
if _directory:
    _install(_directory)
