"""Profiles of the central during a benchmark (owns tools/bench_profile.py), for tools/bench.py
--profile DIR: the environment that makes the central's processes profile themselves (the hook in
tools/profile_hook/sitecustomize.py), and the report of the profiles they wrote, merged.

The profiles measure CPU time (time.process_time) per function; the profiler slows the central
down, so the figures of a profiled run are not comparable with those of a run without it.
"""

from __future__ import annotations

import io
import os
import pstats
from pathlib import Path

HOOK_DIR = Path(__file__).resolve().parent / "profile_hook"
TOP = 25


def hook_env(directory: Path) -> dict[str, str]:
    """Settings for a central's environment that make each of its processes write a profile into
    `directory` (created here): the hook first on PYTHONPATH, LOTTERY_PROFILE_DIR naming it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(filter(None, [str(HOOK_DIR), os.environ.get("PYTHONPATH", "")]))
    return {"PYTHONPATH": path, "LOTTERY_PROFILE_DIR": str(directory.resolve())}


def report(directory: Path, title: str, top: int = TOP) -> str:
    """The `top` functions by internal CPU time over every profile under `directory`, merged (a
    function's figures summed over the processes and runs; a process's whole life, its start
    included), as pstats prints them, file names without their directories."""
    files = sorted(directory.rglob("*.prof"))
    if not files:
        return f"profile {title}: no profile under {directory} (a central killed by a signal writes none)\n"
    stream = io.StringIO()
    stats = pstats.Stats(*(str(path) for path in files), stream=stream)
    workers = sum(1 for path in files if path.name.startswith("worker-"))
    stream.write(f"profile {title}: {len(files)} processes ({len(files) - workers} supervisor, {workers} workers), "
                 f"files in {directory}; top {top} by internal CPU time\n")
    stats.files = []  # type: ignore[attr-defined]  # else pstats lists every file it read
    stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(top)
    return stream.getvalue()
