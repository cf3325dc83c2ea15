"""An hour's files fingerprinted by `stat`, and its figures read once per run.

`fingerprint` names the state of an hour's files (records or archive, and events) without reading
them: name, size and mtime of each. `raw_hour` stores it in its materialization metadata; the
sensor compares it after a cursor reset (`unchanged`) to tell an unchanged registered hour (skip
it) from one whose files changed since (register it again). Archiving is no change: `archive_hour`
replaces the `.jsonl` by a `.jsonl.gz` verified to hold the same bytes, with the original's mtime.

`hour_stats` computes `compute_hour_stats` and keeps the result for as long as the files keep
their fingerprint, so in a run the hour checks reuse what the `raw_hour` step just read (steps run
in one process, `in_process_executor`) and a check run on its own still reads the current files.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from collector import layout
from l2_pipeline.hour_stats import HourStats, compute_hour_stats
from l2_pipeline.lake_tree import LakeTree, as_tree

RAW_NEEDS = (("records", "archive"), ("events",))  # what an hour's statistics read (`hour_stats.records_source`)

MAX_CACHED_HOURS = 512  # a run's range is at most HOURS_PER_RUN (100) hours; stats are a few KB each

_cache: OrderedDict[tuple, HourStats] = OrderedDict()


def fingerprint(lake: Path | LakeTree, inst_id: str, hour: datetime) -> str:
    """`name:size:mtime_ns` of each of the hour's files that exists, `;`-separated ("" for none)."""
    return as_tree(lake).fingerprint(inst_id, hour)


def _records_and_events(fp: str) -> tuple[tuple[str, str, str] | None, list[str]]:
    """Of a fingerprint: (kind "records" or "archive", size, mtime) of the file the records are read
    from (the `.jsonl` while it exists, as `hour_stats.records_source`), and the events entries."""
    files: dict[str, tuple[str, str]] = {}
    events = []
    for part in filter(None, fp.split(";")):
        name, size, mtime = part.rsplit(":", 2)
        if name.endswith(layout.EVENTS_SUFFIX):
            events.append(part)
        elif name.endswith(layout.ARCHIVE_SUFFIX):
            files["archive"] = (size, mtime)
        else:
            files["records"] = (size, mtime)
    kind = "records" if "records" in files else "archive" if "archive" in files else None
    return ((kind, *files[kind]) if kind else None), events


def unchanged(stored: str, current: str) -> bool:
    """Whether the hour's files, fingerprinted `current` now, are the ones fingerprinted `stored`:
    the records read from the same file, same size and mtime, and the same events file, or the
    `.jsonl` read then archived since (its `.jsonl.gz` has the original's mtime; a late write before
    archiving changed that mtime)."""
    try:
        (was, was_events), (now, now_events) = _records_and_events(stored), _records_and_events(current)
    except ValueError:  # not a fingerprint of ours
        return stored == current
    if was_events != now_events or was is None or now is None:
        return stored == current
    archived = was[0] == "records" and now[0] == "archive" and was[2] == now[2]
    return was == now or archived


def hour_stats(lake: Path | LakeTree, inst_id: str, hour: datetime, cadence_seconds: float
               ) -> tuple[HourStats, str]:
    """The hour's stats and the fingerprint of its files before they were read (if they changed while
    being read, that fingerprint no longer matches, so a later comparison sees the change)."""
    tree = as_tree(lake)
    before = tree.fingerprint(inst_id, hour)
    key = (tree.key, inst_id, hour, cadence_seconds, before)
    stats = _cache.get(key)
    if stats is not None:
        _cache.move_to_end(key)
        return stats, before
    with tree.hour_workspace(inst_id, hour, RAW_NEEDS) as root:
        stats = compute_hour_stats(root, inst_id, hour, cadence_seconds)
    if stats.source is not None:
        stats.source_label = tree.where(stats.source)
    after = tree.fingerprint(inst_id, hour)
    if after == before:  # not changed while being read: safe to reuse while it stays so
        _cache[key] = stats
        while len(_cache) > MAX_CACHED_HOURS:
            _cache.popitem(last=False)
    return stats, before


@dataclass(frozen=True)
class HourRead:
    """One hour as read for registration and checks: its stats, or the error that kept it from
    being read (a corrupt gzip, an I/O error), and the fingerprint of its files."""

    stats: HourStats | None
    fingerprint: str
    error: str | None = None


def read_hour(lake: Path | LakeTree, inst_id: str, hour: datetime, cadence_seconds: float) -> HourRead:
    """`hour_stats`, with any failure to read the hour returned as its error instead of raised:
    one unreadable hour must not cost the other hours of a run their registration and checks."""
    try:
        return HourRead(*hour_stats(lake, inst_id, hour, cadence_seconds))
    except Exception as exc:  # any unreadable file
        return HourRead(None, fingerprint(lake, inst_id, hour), f"{type(exc).__name__}: {exc}")
