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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector import layout

_HOUR_NAME_RE = re.compile(r"([01][0-9]|2[0-3])\.")  # {HH}.jsonl, {HH}.jsonl.gz, {HH}.parquet, …

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
) -> Iterator[layout.HourFile]:
    """Raw-lake hour files (optionally of one instrument) with after < hour ≤ until (either bound
    optional), by instrument, then in path order."""
    inst_ids = [layout.validate_inst_id(inst_id)] if inst_id else layout.list_instruments(data_dir)
    for iid in inst_ids:
        for day, directory in day_dirs(layout.raw_root(data_dir) / iid, on_unreadable):
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
) -> dict[datetime, dict[str, Path]]:
    """hour → {kind: path} of one instrument, for after < hour ≤ until."""
    found: dict[datetime, dict[str, Path]] = defaultdict(dict)
    for hour_file in iter_hour_files(data_dir, inst_id, after=after, until=until, on_unreadable=on_unreadable):
        found[hour_file.hour][hour_file.kind] = hour_file.path
    return dict(found)


def first_hour(data_dir: Path, on_unreadable: OnUnreadable = raise_unreadable) -> datetime | None:
    """The earliest hour that has a file in the raw or curated lake (None for an empty lake): one
    listing per instrument directory plus one of each instrument's first day."""
    earliest: datetime | None = None
    for prefix in (layout.RAW_PREFIX, layout.CURATED_PREFIX):
        for inst_dir in list_dir(Path(data_dir) / prefix, on_unreadable):
            if not layout.INST_ID_RE.fullmatch(inst_dir.name):
                continue
            for day, directory in day_dirs(inst_dir, on_unreadable):
                hours = [int(m.group(1)) for p in list_dir(directory, on_unreadable)
                         if (m := _HOUR_NAME_RE.match(p.name))]
                if hours:
                    hour = day.replace(hour=min(hours))
                    earliest = hour if earliest is None else min(earliest, hour)
                    break
    return earliest
