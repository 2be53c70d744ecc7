"""The run directories under ``<cache>/runs/<run id>/`` (logs and configs, kept after a run; the
last :data:`KEEP_RUNS` of finished runs are kept, a live run's never pruned).

Imports: :mod:`authproxy_local.core`, ``psutil``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import psutil

from authproxy_local.core.cache import cache_dir

KEEP_RUNS = 10


def run_alive(run_id: str) -> bool:
    """Whether the process that owns a run directory (``<date>-<time>-<pid>-<mode>``) still runs:
    a live run's logs and configs are never pruned (a long ``make bench`` outlives many e2e
    starts on a shared machine)."""
    parts = run_id.split("-")
    return len(parts) >= 3 and parts[2].isdigit() and psutil.pid_exists(int(parts[2]))


def new_run_dir(stack: str, mode: str) -> tuple[str, Path]:
    """A fresh run directory (after pruning old finished runs); returns (run id, directory)."""
    run_id = f"{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}-{stack}-{mode}"
    runs = cache_dir() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in runs.iterdir() if p.is_dir() and not run_alive(p.name))
    for p in old[: max(0, len(old) - KEEP_RUNS + 1)]:
        shutil.rmtree(p, ignore_errors=True)
    run_dir = runs / run_id
    run_dir.mkdir()
    return run_id, run_dir
