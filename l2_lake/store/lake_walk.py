"""Walking the raw lake: the one lister of instrument, day and hour-file directories, used by the
collector (start-up repair, dedup high-water mark), the pipeline (sensors, schedules, retention)
and the tests.

Walks are bounded: only day directories that can hold a wanted hour are listed, so a lake of weeks
costs one `listdir` per instrument plus one per day inside the window.

A directory that cannot be listed (permission denied, I/O error) goes to `on_unreadable`:
`raise_unreadable` (the default) fails the walk; `log_unreadable(log)` logs a warning and skips
it, so one bad directory is a warning in a sensor tick's log instead of a tick that fails forever.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from l2_lake.format import layout

_HOUR_NAME_RE = re.compile(r"([01][0-9]|2[0-3])\.")  # {HH}.jsonl, {HH}.jsonl.gz, {HH}.events.jsonl

OnUnreadable = Callable[[Path, OSError], None]


def raise_unreadable(path: Path, exc: OSError) -> None:
    """The strict `OnUnreadable`: the walk fails."""
    raise exc


def log_unreadable(log: logging.Logger) -> OnUnreadable:
    """An `OnUnreadable` that logs a warning (the directory is skipped)."""

    def warn(path: Path, exc: OSError) -> None:
        log.warning(f"skipped {path}: cannot list it ({exc.strerror or exc})")

    return warn


def list_dir(directory: Path, on_unreadable: OnUnreadable = raise_unreadable) -> list[Path]:
    """Entries of `directory`, sorted ([] if it does not exist); an unreadable one goes to `on_unreadable`."""
    try:
        return sorted(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        on_unreadable(directory, exc)
        return []


def parse_day(name: str) -> datetime | None:
    """The UTC midnight a `YYYY-MM-DD` directory name stands for; None for any other spelling."""
    try:
        day = datetime.strptime(name, layout.DAY_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return day if day.strftime(layout.DAY_FORMAT) == name else None


def day_dirs(directory: Path, on_unreadable: OnUnreadable = raise_unreadable) -> list[tuple[datetime, Path]]:
    """(day, path) of the day directories directly under `directory`, oldest first."""
    entries = list_dir(directory, on_unreadable)
    try:  # is_dir() stats each entry: fails when the directory is readable but not searchable
        return [(day, p) for p in entries if (day := parse_day(p.name)) is not None and p.is_dir()]
    except OSError as exc:
        on_unreadable(directory, exc)
        return []


def iter_hour_files(
    data_dir: Path,
    inst_id: str | None = None,
    *,
    after: datetime | None = None,
    until: datetime | None = None,
    on_unreadable: OnUnreadable = raise_unreadable,
    prefix: Path = layout.RAW_PREFIX,
) -> Iterator[layout.HourFile]:
    """Raw-lake hour files (optionally of one instrument) with after < hour ≤ until (either bound
    optional), by instrument, then in path order; `prefix` names the dataset (the tape's:
    `layout.TAPE_PREFIX`, whose `{HH}.jsonl` are then kind "records")."""
    inst_ids = [layout.validate_inst_id(inst_id)] if inst_id else layout.list_instruments(data_dir, prefix)
    for iid in inst_ids:
        for day, directory in day_dirs(layout.raw_root(data_dir, prefix) / iid, on_unreadable):
            if after is not None and day + timedelta(days=1) <= after + layout.HOUR:
                continue  # every hour of this day is ≤ after
            if until is not None and day > until:
                break
            for path in list_dir(directory, on_unreadable):
                parsed = layout.parse_hour_file(path)
                if parsed is None or parsed.inst_id != iid:
                    continue
                if (after is not None and parsed.hour <= after) or (until is not None and parsed.hour > until):
                    continue
                yield parsed


def hour_files(
    data_dir: Path,
    inst_id: str,
    *,
    after: datetime | None = None,
    until: datetime | None = None,
    on_unreadable: OnUnreadable = raise_unreadable,
    prefix: Path = layout.RAW_PREFIX,
) -> dict[datetime, dict[str, Path]]:
    """hour → {kind: path} of one instrument, for after < hour ≤ until."""
    found: dict[datetime, dict[str, Path]] = defaultdict(dict)
    for hour_file in iter_hour_files(data_dir, inst_id, after=after, until=until, on_unreadable=on_unreadable,
                                     prefix=prefix):
        found[hour_file.hour][hour_file.kind] = hour_file.path
    return dict(found)


@dataclass(frozen=True, slots=True)
class ParquetHour:
    """One hour's file of a hive-partitioned Parquet tier (`layout.hive_hour_dir`)."""

    inst_id: str
    hour: datetime
    path: Path


def parquet_instruments(data_dir: Path, prefix: Path, on_unreadable: OnUnreadable = raise_unreadable) -> list[str]:
    """instIds that have an `instId=` directory in a Parquet tier, sorted."""
    names = (layout.parse_hive_part(p.name, 0) for p in list_dir(Path(data_dir) / prefix, on_unreadable))
    return [name for name in names if name is not None]


def iter_parquet_hours(
    data_dir: Path,
    prefix: Path,
    inst_id: str | None = None,
    *,
    until: datetime | None = None,
    on_unreadable: OnUnreadable = raise_unreadable,
) -> Iterator[ParquetHour]:
    """Hours of a Parquet tier (optionally of one instrument) with hour ≤ until, oldest first per
    instrument. Directory names are parsed strictly (`layout.parse_hive_part`), so only the paths the
    layout names are found."""
    inst_ids = [layout.validate_inst_id(inst_id)] if inst_id else parquet_instruments(data_dir, prefix, on_unreadable)
    for iid in inst_ids:
        inst_dir = Path(data_dir) / prefix / f"instId={iid}"
        days = [(day, p) for p in list_dir(inst_dir, on_unreadable)
                if (name := layout.parse_hive_part(p.name, 1)) and (day := parse_day(name)) is not None]
        for day, day_dir in days:
            if until is not None and day > until:
                break
            hours = sorted((int(h), p) for p in list_dir(day_dir, on_unreadable)
                           if (h := layout.parse_hive_part(p.name, 2)) is not None)
            for h, hour_dir in hours:
                hour = day.replace(hour=h)
                path = hour_dir / layout.PARQUET_FILE
                if (until is None or hour <= until) and path.is_file():
                    yield ParquetHour(iid, hour, path)


def first_hour(data_dir: Path, on_unreadable: OnUnreadable = raise_unreadable) -> datetime | None:
    """The earliest hour that has a file in the raw lake (the snapshots or the tape) or the curated
    tier (None for an empty lake): one listing per instrument directory plus one of each instrument's
    first day."""
    earliest: list[datetime] = []
    inst_dirs = [d for prefix in (layout.RAW_PREFIX, layout.TAPE_PREFIX)
                 for d in list_dir(layout.raw_root(data_dir, prefix), on_unreadable)]
    for inst_dir in inst_dirs:
        if not layout.INST_ID_RE.fullmatch(inst_dir.name):
            continue
        for day, directory in day_dirs(inst_dir, on_unreadable):
            hours = [int(m.group(1)) for p in list_dir(directory, on_unreadable) if (m := _HOUR_NAME_RE.match(p.name))]
            if hours:
                earliest.append(day.replace(hour=min(hours)))
                break
    for inst_id in parquet_instruments(data_dir, layout.CURATED_PREFIX, on_unreadable):
        first = next(iter_parquet_hours(data_dir, layout.CURATED_PREFIX, inst_id, on_unreadable=on_unreadable), None)
        if first is not None:
            earliest.append(first.hour)
    return min(earliest, default=None)
