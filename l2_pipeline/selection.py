"""Which instrument-hours exist, are closed, or are due at a given time: pure functions of the
lake's directory listing and a time you choose (tests evaluate them at any instant).

Scans are bounded: only day directories that can hold a wanted hour are listed, so a lake of
weeks costs one `listdir` per instrument plus one per day inside the window.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector import layout
from l2_pipeline.hours import ended_at_least, is_closed

DAY_FORMAT = "%Y-%m-%d"


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


def day_dirs(data_dir: Path, inst_id: str) -> list[tuple[datetime, Path]]:
    """(day, directory) of an instrument's day directories, oldest first."""
    inst_dir = layout.raw_root(data_dir) / layout.validate_inst_id(inst_id)
    try:
        entries = list(inst_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    days = [(day, p) for p in entries if (day := _day_of(p.name)) is not None and p.is_dir()]
    return sorted(days)


def hour_files(
    data_dir: Path, inst_id: str, *, after: datetime | None = None, until: datetime | None = None
) -> dict[datetime, dict[str, Path]]:
    """hour → {kind: path} for hours with after < hour ≤ until (either bound optional)."""
    found: dict[datetime, dict[str, Path]] = defaultdict(dict)
    for day, directory in day_dirs(data_dir, inst_id):
        if after is not None and day + timedelta(days=1) <= after + layout.HOUR:
            continue  # every hour of this day is ≤ after
        if until is not None and day > until:
            break
        for path in directory.iterdir():
            parsed = layout.parse_hour_file(path)
            if parsed is None or parsed.inst_id != inst_id:
                continue
            if (after is not None and parsed.hour <= after) or (until is not None and parsed.hour > until):
                continue
            found[parsed.hour][parsed.kind] = path
    return dict(found)


def lake_instruments(data_dir: Path) -> list[str]:
    return layout.list_instruments(data_dir)


def closed_hours_after(
    data_dir: Path, inst_id: str, after: datetime | None, now: datetime, grace: timedelta
) -> list[datetime]:
    """Closed hours of `inst_id` after `after` that have any file (records, archive or events)."""
    latest_closed = now.replace(minute=0, second=0, microsecond=0) - layout.HOUR
    if not is_closed(latest_closed, now, grace):
        latest_closed -= layout.HOUR
    return sorted(hour_files(data_dir, inst_id, after=after, until=latest_closed))


def pending_registrations(
    data_dir: Path, instruments: list[str], last_registered: dict[str, datetime], now: datetime, grace: timedelta
) -> list[LakeHour]:
    """Closed hours not yet registered (after each instrument's cursor), oldest first across instruments."""
    pending = [
        LakeHour(hour, inst_id)
        for inst_id in instruments
        for hour in closed_hours_after(data_dir, inst_id, last_registered.get(inst_id), now, grace)
    ]
    return sorted(pending)


def compression_due(
    data_dir: Path, as_of: datetime, compress_after: timedelta, grace: timedelta, now: datetime | None = None
) -> list[LakeHour]:
    """Hours whose `.jsonl` still exists and that ended ≥ `compress_after` before `as_of` (the
    scheduled time) — all of them, however old — and are closed at `now` (never the open hour)."""
    cutoff = as_of - compress_after
    due: list[LakeHour] = []
    for inst_id in lake_instruments(data_dir):
        for hour, kinds in hour_files(data_dir, inst_id, until=cutoff).items():
            if "records" not in kinds or not ended_at_least(hour, as_of, compress_after):
                continue
            if now is not None and not is_closed(hour, now, grace):
                continue
            if not is_closed(hour, as_of, grace):
                continue
            due.append(LakeHour(hour, inst_id))
    return sorted(due)
