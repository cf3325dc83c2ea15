"""An hour's files fingerprinted by `stat`, and its figures read once per run.

`fingerprint` names the state of an hour's files (records or archive, and events) without reading
them: name, size and mtime of each. `raw_hour` stores it in its materialization metadata; the
sensor compares it after a cursor reset to tell an unchanged registered hour (skip it) from one
whose files changed since (register it again).

`hour_stats` computes `compute_hour_stats` and keeps the result for as long as the files keep
their fingerprint, so in a run the hour checks reuse what the `raw_hour` step just read (steps run
in one process, `in_process_executor`) and a check run on its own still reads the current files.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from pathlib import Path

from collector import layout
from l2_pipeline.hour_stats import HourStats, compute_hour_stats

MAX_CACHED_HOURS = 512  # a run's range is at most HOURS_PER_RUN (100) hours; stats are a few KB each

_cache: OrderedDict[tuple, HourStats] = OrderedDict()


def fingerprint(data_dir: Path, inst_id: str, hour: datetime) -> str:
    """`name:size:mtime_ns` of each of the hour's files that exists, `;`-separated ("" for none)."""
    parts = []
    for path_of in (layout.records_path, layout.archive_path, layout.events_path):
        path = path_of(data_dir, inst_id, hour)
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def hour_stats(data_dir: Path, inst_id: str, hour: datetime, cadence_seconds: float) -> tuple[HourStats, str]:
    """The hour's stats and the fingerprint of its files before they were read (if they changed while
    being read, that fingerprint no longer matches, so a later comparison sees the change)."""
    before = fingerprint(data_dir, inst_id, hour)
    key = (str(data_dir), inst_id, hour, cadence_seconds, before)
    stats = _cache.get(key)
    if stats is not None:
        _cache.move_to_end(key)
        return stats, before
    stats = compute_hour_stats(data_dir, inst_id, hour, cadence_seconds)
    after = fingerprint(data_dir, inst_id, hour)
    if after == before:  # not changed while being read: safe to reuse while it stays so
        _cache[key] = stats
        while len(_cache) > MAX_CACHED_HOURS:
            _cache.popitem(last=False)
    return stats, before
