"""An hour's files fingerprinted by `stat`, and its figures read once per run.

`fingerprint` names the state of an hour's files (records or archive, and events) without reading
them: name, size and mtime of each. `raw_hour` stores it in its materialization metadata; the
sensor compares it after a cursor reset (`unchanged`) to tell an unchanged registered hour (skip
it) from one whose files changed since (register it again). Archiving is no change: `archive_hour`
replaces the `.jsonl` by a `.jsonl.gz` verified to hold the same bytes, with the original's mtime.

`hour_stats` computes `compute_hour_stats` and keeps the result for as long as the files keep
their fingerprint; `read_staged_hour` keeps the stats of the `hour_tiers` step's one read the same
way. So in a run the hour checks reuse what that step just read (steps run in one process,
`in_process_executor`) and a check run on its own still reads the current files.
`cached_read` is that cache for any figures of an hour (the tape's: `l2_lake.quality.tape_stats`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pyarrow as pa

from l2_lake.format import layout
from l2_lake.quality.hour_stats import HourStats, compute_hour_read, compute_hour_stats
from l2_lake.quality.tape_stats import TapeFigureDrawer, TapeHourStats, compute_tape_stats
from l2_lake.store.tree import LakeTree, Needs, as_tree

RAW_NEEDS = (("records", "archive"), ("events",))  # what an hour's statistics read (`hour_stats.records_source`)
TAPE_NEEDS = (("tape_records", "tape_archive"),)  # what a tape hour's figures read: its `.jsonl`, else its archive

MAX_CACHED_HOURS = 512  # a run covers at most HOURS_PER_RUN (100) hours; stats are a few KB (a tape picture 100 KB)

T = TypeVar("T")
_cache: OrderedDict[tuple, Any] = OrderedDict()


class Sourced(Protocol):
    source: Path | None
    source_label: str


S = TypeVar("S", bound=Sourced)


def fingerprint(lake: Path | LakeTree, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX) -> str:
    """`name:size:mtime_ns` of each of the hour's files (of the dataset `prefix`) that exists, `;`-separated
    ("" for none)."""
    return as_tree(lake).fingerprint(inst_id, hour, prefix)


def _records_and_events(fp: str) -> tuple[tuple[str, str, str] | None, list[str]]:
    """Of a fingerprint: (kind "records" or "archive", size, mtime) of the file the records are read
    from (the `.jsonl` while it exists, as `hour_stats.records_source`), and the events entries."""
    files: dict[str, tuple[str, str]] = {}
    events = []
    for part in filter(None, fp.split(";")):
        name, size, mtime = part.rsplit(":", 2)
        if name.endswith(layout.EVENTS_SUFFIX):
            events.append(part)
        elif layout.is_archive(name):
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


def cached_read(lake: Path | LakeTree, inst_id: str, hour: datetime, what: tuple, needs: Needs,
                compute: Callable[[Path], T], prefix: Path = layout.RAW_PREFIX,
                enough: Callable[[T], bool] = lambda _: True) -> tuple[T, str]:
    """`compute` of a directory holding the hour's files that `needs` names (`LakeTree.hour_workspace`),
    and the fingerprint of the hour's files of the dataset `prefix` before they were read (if they
    changed while being read, that fingerprint no longer matches, so a later comparison sees the
    change). Kept while the files keep that fingerprint; `what` names the figures and their parameters.
    A kept value that is not `enough` (it lacks something this call wants) is computed again."""
    tree = as_tree(lake)
    before = tree.fingerprint(inst_id, hour, prefix)
    key = (tree.key, what, inst_id, hour, before)
    if key in _cache and enough(_cache[key]):
        _cache.move_to_end(key)
        return _cache[key], before
    with tree.hour_workspace(inst_id, hour, needs) as root:
        value = compute(root)
    _keep_unchanged(tree, key, value, prefix)
    return value, before


def _keep_unchanged(tree: LakeTree, key: tuple, value: Any, prefix: Path = layout.RAW_PREFIX) -> None:
    """Keep `value` under `key` (whose last part is the fingerprint of the hour's files before they
    were read) if the files still have that fingerprint: not changed while being read, so safe to
    reuse while they keep it."""
    _, _, inst_id, hour, before = key
    if tree.fingerprint(inst_id, hour, prefix) == before:
        _cache[key] = value
        while len(_cache) > MAX_CACHED_HOURS:
            _cache.popitem(last=False)


def hour_stats(lake: Path | LakeTree, inst_id: str, hour: datetime, cadence_seconds: float
               ) -> tuple[HourStats, str]:
    """The hour's stats and the fingerprint of its files before they were read (`cached_read`)."""
    tree = as_tree(lake)
    return cached_read(tree, inst_id, hour, ("hour_stats", cadence_seconds), RAW_NEEDS,
                       lambda root: labelled(tree, compute_hour_stats(root, inst_id, hour, cadence_seconds)))


def read_staged_hour(tree: LakeTree, root: Path, inst_id: str, hour: datetime, cadence_seconds: float, before: str
                     ) -> tuple[HourRead[HourStats], pa.Table | None]:
    """`read_hour` of an hour whose files fingerprinted `before` are staged in `root` (`tree.hour_workspace`),
    with the source table its records were read into (`compute_hour_read`), for the steps that build the
    hour's other tiers from the same read; the stats are kept for the hour's checks as `hour_stats` keeps them."""
    try:
        stats, src = compute_hour_read(root, inst_id, hour, cadence_seconds)
    except Exception as exc:  # any unreadable file, as `guarded_read`
        return HourRead.unreadable(before, exc), None
    _keep_unchanged(tree, (tree.key, ("hour_stats", cadence_seconds), inst_id, hour, before), labelled(tree, stats))
    return HourRead(stats, before), src


def tape_hour_stats(lake: Path | LakeTree, inst_id: str, hour: datetime, figure: TapeFigureDrawer | None = None
                    ) -> tuple[TapeHourStats, str]:
    """The tape hour's figures (`tape_stats.compute_tape_stats`; `figure`: with its picture drawn by it) and the
    fingerprint of its files before they were read (`cached_read`)."""
    tree = as_tree(lake)
    return cached_read(tree, inst_id, hour, ("tape_stats",), TAPE_NEEDS,
                       lambda root: labelled(tree, compute_tape_stats(root, inst_id, hour, figure)), layout.TAPE_PREFIX,
                       enough=lambda stats: figure is None or stats.figure is not None)


def labelled(tree: LakeTree, stats: S) -> S:
    """`stats` with its source named as the lake names it (an s3:// URL for a staged copy)."""
    if stats.source is not None:
        stats.source_label = tree.where(stats.source)
    return stats


@dataclass(frozen=True)
class HourRead(Generic[T]):
    """One hour as read for registration and checks: its figures (`stats`), or the error that kept it
    from being read (a corrupt gzip, an I/O error), and the fingerprint of its files."""

    stats: T | None
    fingerprint: str
    error: str | None = None

    @classmethod
    def unreadable(cls, fingerprint: str, exc: Exception) -> HourRead[T]:
        """An hour that could not be read, with `exc` as its error."""
        return cls(None, fingerprint, f"{type(exc).__name__}: {exc}")


def guarded_read(lake: Path | LakeTree, inst_id: str, hour: datetime, read: Callable[[], tuple[T, str]],
                 prefix: Path = layout.RAW_PREFIX) -> HourRead[T]:
    """`read()` (figures, fingerprint), with any failure to read the hour returned as its error
    instead of raised: one unreadable hour must not cost the other hours of a run their
    registration and checks."""
    try:
        return HourRead(*read())
    except Exception as exc:  # any unreadable file
        return HourRead.unreadable(fingerprint(lake, inst_id, hour, prefix), exc)


def read_hour(lake: Path | LakeTree, inst_id: str, hour: datetime, cadence_seconds: float) -> HourRead[HourStats]:
    """`hour_stats` of one hour, failures as its error (`guarded_read`)."""
    return guarded_read(lake, inst_id, hour, lambda: hour_stats(lake, inst_id, hour, cadence_seconds))


def read_tape_hour(lake: Path | LakeTree, inst_id: str, hour: datetime, figure: TapeFigureDrawer | None = None
                   ) -> HourRead[TapeHourStats]:
    """`tape_hour_stats` of one tape hour, failures as its error (`guarded_read`)."""
    return guarded_read(lake, inst_id, hour, lambda: tape_hour_stats(lake, inst_id, hour, figure), layout.TAPE_PREFIX)
