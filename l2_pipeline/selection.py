"""Which instrument-hours exist, are closed, or are due at a given time: pure functions of the
lake's directory listing and a time you choose (tests evaluate them at any instant).

Scans are bounded: only day directories that can hold a wanted hour are listed, so a lake of
weeks costs one `listdir` per instrument plus one per day inside the window. (That, and going on
past a directory it cannot list, is why this walker exists beside `collector.layout.iter_hour_files`,
which lists every day and raises; file names are decoded by `collector.layout.parse_hour_file`, and
instruments are `collector.layout.list_instruments`.)

An instrument or day directory that cannot be listed (permission denied, I/O error) is handed to
`on_unreadable` and skipped (`raise_unreadable`, the default of `compression_due` and
`retention.plan_deletions`, re-raises instead).
Sensors, schedules and the retention op pass `log_unreadable`, so one bad directory is a warning
in the tick's log instead of a tick that fails forever.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector import layout
from l2_pipeline.hours import ended_at_least, is_closed

DAY_FORMAT = "%Y-%m-%d"

OnUnreadable = Callable[[Path, OSError], None]


def raise_unreadable(path: Path, exc: OSError) -> None:
    """The strict `OnUnreadable`: the listing fails."""
    raise exc


def log_unreadable(log: logging.Logger) -> OnUnreadable:
    """An `OnUnreadable` that logs a warning (the directory is skipped)."""

    def warn(path: Path, exc: OSError) -> None:
        log.warning(f"skipped {path}: cannot list it ({exc.strerror or exc})")

    return warn


def list_dir(directory: Path, on_unreadable: OnUnreadable) -> list[Path]:
    """Entries of `directory` ([] if it does not exist); an unreadable one goes to `on_unreadable`."""
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        on_unreadable(directory, exc)
        return []


@dataclass(frozen=True, order=True)
class LakeHour:
    """One instrument-hour; sorts by hour, then instrument."""

    hour: datetime
    inst_id: str


def _day_of(name: str) -> datetime | None:
    try:
        day = datetime.strptime(name, DAY_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return day if day.strftime(DAY_FORMAT) == name else None


def day_dirs(data_dir: Path, inst_id: str, on_unreadable: OnUnreadable) -> list[tuple[datetime, Path]]:
    """(day, directory) of an instrument's day directories, oldest first."""
    inst_dir = layout.raw_root(data_dir) / layout.validate_inst_id(inst_id)
    entries = list_dir(inst_dir, on_unreadable)
    try:  # is_dir() stats each entry: fails when the directory is readable but not searchable
        days = [(day, p) for p in entries if (day := _day_of(p.name)) is not None and p.is_dir()]
    except OSError as exc:
        on_unreadable(inst_dir, exc)
        return []
    return sorted(days)


def hour_files(
    data_dir: Path,
    inst_id: str,
    *,
    after: datetime | None = None,
    until: datetime | None = None,
    on_unreadable: OnUnreadable,
) -> dict[datetime, dict[str, Path]]:
    """hour → {kind: path} for hours with after < hour ≤ until (either bound optional)."""
    found: dict[datetime, dict[str, Path]] = defaultdict(dict)
    for day, directory in day_dirs(data_dir, inst_id, on_unreadable):
        if after is not None and day + timedelta(days=1) <= after + layout.HOUR:
            continue  # every hour of this day is ≤ after
        if until is not None and day > until:
            break
        for path in list_dir(directory, on_unreadable):
            parsed = layout.parse_hour_file(path)
            if parsed is None or parsed.inst_id != inst_id:
                continue
            if (after is not None and parsed.hour <= after) or (until is not None and parsed.hour > until):
                continue
            found[parsed.hour][parsed.kind] = path
    return dict(found)


def closed_hours_after(
    data_dir: Path,
    inst_id: str,
    after: datetime | None,
    now: datetime,
    grace: timedelta,
    on_unreadable: OnUnreadable,
) -> list[datetime]:
    """Closed hours of `inst_id` after `after` that have any file (records, archive or events)."""
    latest_closed = now.replace(minute=0, second=0, microsecond=0) - layout.HOUR
    if not is_closed(latest_closed, now, grace):
        latest_closed -= layout.HOUR
    return sorted(hour_files(data_dir, inst_id, after=after, until=latest_closed, on_unreadable=on_unreadable))


def pending_registrations(
    data_dir: Path,
    instruments: list[str],
    last_registered: dict[str, datetime],
    now: datetime,
    grace: timedelta,
    on_unreadable: OnUnreadable,
) -> list[LakeHour]:
    """Closed hours not yet registered (after each instrument's cursor), oldest first across instruments."""
    pending = [
        LakeHour(hour, inst_id)
        for inst_id in instruments
        for hour in closed_hours_after(data_dir, inst_id, last_registered.get(inst_id), now, grace, on_unreadable)
    ]
    return sorted(pending)


def compression_due(
    data_dir: Path,
    as_of: datetime,
    compress_after: timedelta,
    grace: timedelta,
    now: datetime | None = None,
    on_unreadable: OnUnreadable = raise_unreadable,
) -> list[LakeHour]:
    """Hours whose `.jsonl` still exists and that ended ≥ `compress_after` before `as_of` (the
    scheduled time) — all of them, however old — and are closed at `now` (never the open hour)."""
    cutoff = as_of - compress_after
    due: list[LakeHour] = []
    for inst_id in layout.list_instruments(data_dir):
        for hour, kinds in hour_files(data_dir, inst_id, until=cutoff, on_unreadable=on_unreadable).items():
            if "records" not in kinds or not ended_at_least(hour, as_of, compress_after):
                continue
            if now is not None and not is_closed(hour, now, grace):
                continue
            if not is_closed(hour, as_of, grace):
                continue
            due.append(LakeHour(hour, inst_id))
    return sorted(due)
