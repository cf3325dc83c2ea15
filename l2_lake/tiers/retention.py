"""Retention: which files are due for deletion at a given time, and deleting them safely.

- raw hours (`.jsonl`, `.jsonl.gz`, `.events.jsonl`) that ended ≥ `raw_retention` before `as_of`, of
  the snapshots and of the full-resolution tape (`raw/okx/l2_tape/…`, `.jsonl` and `.parquet`) alike;
- curated, features and resampled (`resampled_books`, every cadence and depth) Parquet of hours that
  ended ≥ `curated_retention` before `as_of` (None: keep forever).

Only paths the lake layout names are candidates, and each is deleted only if it is a regular file
(not a symlink) whose resolved path lies inside the resolved data root; anything else is refused
and reported. Emptied day directories are removed the same way. `dry_run` reports without deleting.
A directory that cannot be listed goes to `on_unreadable` (see `l2_lake.store.lake_walk`).

In a lake in object storage (`l2_lake.store.tree.ObjectTree`) the same rules pick the objects,
found by listing the lake's prefix, and each is deleted with one DeleteObject.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from l2_lake.format import layout
from l2_lake.format.hours import ended_at_least
from l2_lake.store.lake_walk import OnUnreadable, raise_unreadable
from l2_lake.store.tree import LakeTree, LocalTree, ObjectTree, as_tree
from l2_lake.tiers.resampled import RESAMPLED_PREFIX
from l2_lake.tiers.selection import ClockReport, LakeHour, lake_time, report_clock_skew


@dataclass(frozen=True)
class Candidate:
    path: Path
    kind: str  # records | events | archive | tape_records | tape_archive | curated | features | resampled
    inst_id: str
    hour: datetime


@dataclass
class DeletionReport:
    dry_run: bool
    removed: list[str] = field(default_factory=list)  # (or would remove, in a dry run)
    refused: list[str] = field(default_factory=list)  # "path: reason"
    removed_dirs: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    hours: set[LakeHour] = field(default_factory=set)  # instrument-hours whose raw files were removed

    def record(self, name: str, size: int, cand: Candidate) -> None:
        """Count one file or object removed (or, dry run, to remove)."""
        self.removed.append(name)
        self.bytes_freed += size
        if cand.kind not in PARQUET_KINDS:
            self.hours.add(LakeHour(cand.hour, cand.inst_id))

    def add(self, other: DeletionReport) -> None:
        """Count `other` (another tree's deletions) in this report."""
        self.removed += other.removed
        self.refused += other.refused
        self.removed_dirs += other.removed_dirs
        self.bytes_freed += other.bytes_freed
        self.hours |= other.hours


class UnsafePath(ValueError):
    """A path that must not be deleted: outside the data root, or a symlink."""


def check_inside_root(root: Path, path: Path) -> Path:
    """The resolved `path` if it is a regular file or directory strictly inside the resolved `root`
    and not a symlink itself; raises UnsafePath otherwise."""
    real_root = Path(root).resolve(strict=True)
    if path.is_symlink():
        raise UnsafePath(f"{path}: is a symlink (-> {os.readlink(path)}); refusing to delete through links")
    resolved = path.resolve(strict=True)
    if resolved == real_root or not resolved.is_relative_to(real_root):
        raise UnsafePath(f"{path}: resolves to {resolved}, outside the data root {real_root}")
    return resolved


PARQUET_TIERS = {"curated": layout.CURATED_PREFIX, "features": layout.FEATURES_PREFIX}
PARQUET_KINDS = {*PARQUET_TIERS, "resampled"}
RAW_DATASETS = {"": layout.RAW_PREFIX, "tape_": layout.TAPE_PREFIX}  # candidates' kind prefix → raw dataset
_CADENCE_DIR, _DEPTH_DIR = re.compile(r"cadence_ms=[1-9][0-9]*"), re.compile(r"depth=[1-9][0-9]*")


def parquet_tiers(tree: LakeTree, on_unreadable: OnUnreadable = raise_unreadable) -> list[tuple[str, Path]]:
    """(kind, prefix) of every Parquet tier in the lake: curated, features, and each resampling
    `resampled_books` wrote (`resampled/okx/l2_perps/cadence_ms=…/depth=…`)."""
    resampled = [RESAMPLED_PREFIX / cadence / depth
                 for cadence in tree.subdirs(RESAMPLED_PREFIX, on_unreadable) if _CADENCE_DIR.fullmatch(cadence)
                 for depth in tree.subdirs(RESAMPLED_PREFIX / cadence, on_unreadable) if _DEPTH_DIR.fullmatch(depth)]
    return [*PARQUET_TIERS.items(), *(("resampled", prefix) for prefix in resampled)]


def _parquet_files(tree: LakeTree, cutoff: datetime, on_unreadable: OnUnreadable) -> list[Candidate]:
    return [
        Candidate(found.path, kind, found.inst_id, found.hour)
        for kind, prefix in parquet_tiers(tree, on_unreadable)
        for found in tree.parquet_hours(prefix, until=cutoff, on_unreadable=on_unreadable)
    ]


def plan_deletions(
    lake: Path | LakeTree,
    as_of: datetime,
    raw_retention: timedelta,
    curated_retention: timedelta | None,
    on_unreadable: OnUnreadable = raise_unreadable,
    report: ClockReport = report_clock_skew,
) -> list[Candidate]:
    """Every file due for deletion at `as_of` (the scheduled time; or, when the pipeline's clock runs more
    than an hour ahead of the lake's newest data, that data's end: `selection.lake_time`, reported),
    oldest first. A clock days ahead never deletes live hours."""
    if raw_retention <= timedelta(0):
        raise ValueError("raw retention must be positive: refusing to delete the open hour")
    tree = as_tree(lake)
    as_of = lake_time(tree, as_of, on_unreadable, report)
    raw_cutoff = as_of - raw_retention
    out: list[Candidate] = []
    for kind_prefix, prefix in RAW_DATASETS.items():
        for inst_id in tree.instruments(prefix):
            hours = tree.hour_files(inst_id, until=raw_cutoff, on_unreadable=on_unreadable, prefix=prefix)
            for hour, kinds in sorted(hours.items()):
                if ended_at_least(hour, as_of, raw_retention):
                    out.extend(Candidate(path, kind_prefix + kind, inst_id, hour)
                               for kind, path in sorted(kinds.items()))
    if curated_retention is not None and curated_retention > timedelta(0):
        cur_cutoff = as_of - curated_retention
        parquet = _parquet_files(tree, cur_cutoff, on_unreadable)
        out.extend(c for c in parquet if ended_at_least(c.hour, as_of, curated_retention))
    return sorted(out, key=lambda c: (c.hour, c.inst_id, c.kind))


def delete_files(lake: Path | LakeTree, candidates: list[Candidate], dry_run: bool) -> DeletionReport:
    """Delete (or, dry run, only list) `candidates`: objects of an object-storage lake, or files of a
    local one, refusing anything unsafe and then removing the day directories this emptied."""
    tree = as_tree(lake)
    if isinstance(tree, ObjectTree):
        return delete_objects(tree, candidates, dry_run)
    assert isinstance(tree, LocalTree)
    report = DeletionReport(dry_run=dry_run)
    root = tree.root
    touched_dirs: set[Path] = set()
    for cand in candidates:
        try:
            check_inside_root(root, cand.path)
            if not cand.path.is_file():
                raise UnsafePath(f"{cand.path}: not a regular file")
            size = cand.path.stat().st_size
        except FileNotFoundError:
            continue  # already gone: idempotent
        except UnsafePath as exc:
            report.refused.append(str(exc))
            continue
        if not dry_run:
            cand.path.unlink()
            touched_dirs.add(cand.path.parent)
            if cand.kind in PARQUET_KINDS:  # hour=H/ then date=D/ may both be emptied
                touched_dirs.add(cand.path.parent.parent)
        report.record(str(cand.path), size, cand)
    for directory in sorted(touched_dirs, key=lambda d: len(d.parts), reverse=True):  # deepest first
        try:
            check_inside_root(root, directory)
            if not any(directory.iterdir()):
                directory.rmdir()
                report.removed_dirs.append(str(directory))
        except (OSError, UnsafePath):
            continue
    return report


def delete_objects(tree: ObjectTree, candidates: list[Candidate], dry_run: bool) -> DeletionReport:
    """Delete (or, dry run, only list) the candidates' objects; one already gone is skipped, and one
    written again since it was looked at (`delete_if_unchanged`) is kept. The candidates come from a
    listing of the lake's own prefix, so nothing outside it is named."""
    report = DeletionReport(dry_run=dry_run)
    for cand in candidates:
        relative = cand.path.as_posix()
        found = tree.store.stat(relative)
        if found is None:
            continue
        if not dry_run and not tree.store.delete_if_unchanged(relative, found.version):
            continue
        report.record(tree.url_of(relative), found.size, cand)
    return report
