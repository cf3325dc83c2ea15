"""Moving curated Parquet of the pre-hive layout (`curated/…/{instId}/{YYYY-MM-DD}/{HH}.parquet`)
to the hive layout (`curated/…/instId=…/date=…/hour=…/data.parquet`, docs/CONTRACT.md §1).

Run by the retention job before it plans deletions, so an upgraded lake is readable by
`read_books` and DuckDB without rebuilding anything. A file is moved with one atomic rename on the
same filesystem; where the hive file already exists (the hour was rebuilt since), the old copy is
removed instead. Emptied old directories are removed.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from l2_lake.format import layout
from l2_lake.store.files import fsync_dir
from l2_lake.store.lake_walk import OnUnreadable, day_dirs, list_dir, raise_unreadable

_LEGACY_NAME_RE = re.compile(r"([01][0-9]|2[0-3])\.parquet")


@dataclass
class MigrationReport:
    moved: list[str] = field(default_factory=list)  # "old -> new"
    superseded: list[str] = field(default_factory=list)  # old copies removed: the hive file existed


def migrate_legacy_curated(data_dir: Path, on_unreadable: OnUnreadable = raise_unreadable) -> MigrationReport:
    """Move every legacy curated file of the lake into the hive layout."""
    report = MigrationReport()
    base = Path(data_dir) / layout.CURATED_PREFIX
    for inst_dir in list_dir(base, on_unreadable):
        if not layout.INST_ID_RE.fullmatch(inst_dir.name) or inst_dir.is_symlink():
            continue
        for day, day_dir in day_dirs(inst_dir, on_unreadable):
            for old in list_dir(day_dir, on_unreadable):
                name = _LEGACY_NAME_RE.fullmatch(old.name)
                if name is None or not old.is_file() or old.is_symlink():
                    continue
                new = layout.curated_path(data_dir, inst_dir.name, day.replace(hour=int(name.group(1))))
                if new.exists():
                    old.unlink()
                    report.superseded.append(str(old))
                else:
                    new.parent.mkdir(parents=True, exist_ok=True)
                    old.replace(new)
                    fsync_dir(new.parent)
                    report.moved.append(f"{old} -> {new}")
            _remove_if_empty(day_dir)
        _remove_if_empty(inst_dir)
    return report


def _remove_if_empty(directory: Path) -> None:
    # OSError: not empty (stray or temp files stay for a person to look at) or already gone
    with contextlib.suppress(OSError):
        directory.rmdir()


def has_legacy_curated(data_dir: Path, on_unreadable: OnUnreadable = raise_unreadable) -> bool:
    """Whether the curated tier still has a directory of the pre-hive layout (one listing)."""
    base = Path(data_dir) / layout.CURATED_PREFIX
    return any(layout.INST_ID_RE.fullmatch(p.name) for p in list_dir(base, on_unreadable))
