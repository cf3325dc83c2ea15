"""The collector's lock on its data directory (`.l2-collector.lock`, docs/CONTRACT.md §1): held
exclusively (`flock`) by a running `l2-collector run`, with its PID inside, and released by the OS
when the process ends, however it ends. Readers ask it whether a collector is running there."""

from __future__ import annotations

import fcntl
from pathlib import Path

COLLECTOR_LOCK = ".l2-collector.lock"


def running_collector(data_dir: Path) -> str | None:
    """The PID a running collector wrote into `data_dir`'s lock ("unknown" if none was written), or
    None when no collector holds it (never started there, stopped, or killed)."""
    try:
        handle = open(Path(data_dir) / COLLECTOR_LOCK, "rb")  # noqa: SIM115 - closed below
    except (FileNotFoundError, NotADirectoryError):
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().decode(errors="replace").strip() or "unknown"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None
