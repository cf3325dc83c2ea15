"""Which instrument-hours exist, are closed, or are due at a given time: pure functions of the
lake's listing and a time you choose (tests evaluate them at any instant).

The lake is a directory or object storage (`l2_lake.store.tree`); a directory is walked by
`l2_lake.store.lake_walk` (bounded to the days that can hold a wanted hour). `prefix` names the raw
dataset: the snapshots (`layout.RAW_PREFIX`, the default) or the tape (`layout.TAPE_PREFIX`).
Sensors, schedules and the retention op pass `lake_walk.log_unreadable`, so one directory that
cannot be listed is a warning in the tick's log instead of a tick that fails forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from l2_lake.format import layout
from l2_lake.format.hours import ended_at_least, is_closed, iso
from l2_lake.logs import log_event
from l2_lake.store.lake_walk import OnUnreadable, raise_unreadable
from l2_lake.store.tree import LakeTree, as_tree


@dataclass(frozen=True, order=True)
class LakeHour:
    """One instrument-hour; sorts by hour, then instrument."""

    hour: datetime
    inst_id: str


def closed_hours_after(
    lake: Path | LakeTree,
    inst_id: str,
    after: datetime | None,
    now: datetime,
    grace: timedelta,
    on_unreadable: OnUnreadable,
    prefix: Path = layout.RAW_PREFIX,
) -> list[datetime]:
    """Closed hours of `inst_id` after `after` that have any file (records, archive or events)."""
    latest_closed = now.replace(minute=0, second=0, microsecond=0) - layout.HOUR
    while not is_closed(latest_closed, now, grace):  # a grace of an hour or more reaches back past one hour
        latest_closed -= layout.HOUR
    return sorted(as_tree(lake).hour_files(inst_id, after=after, until=latest_closed, on_unreadable=on_unreadable,
                                           prefix=prefix))


def pending_registrations(
    lake: Path | LakeTree,
    instruments: list[str],
    last_registered: dict[str, datetime],
    now: datetime,
    grace: timedelta,
    on_unreadable: OnUnreadable,
    prefix: Path = layout.RAW_PREFIX,
) -> list[LakeHour]:
    """Closed hours not yet registered (after each instrument's cursor), oldest first across instruments."""
    pending = [
        LakeHour(hour, inst_id)
        for inst_id in instruments
        for hour in closed_hours_after(lake, inst_id, last_registered.get(inst_id), now, grace, on_unreadable, prefix)
    ]
    return sorted(pending)


log = logging.getLogger("l2_lake.tiers.selection")

CLOCK_TOLERANCE = timedelta(hours=1)  # how far the pipeline's clock may run ahead of the lake's newest data
RECENT = timedelta(days=2)  # where the newest data is looked for first (then anywhere)
ClockReport = Callable[[str], None]


def report_clock_skew(message: str) -> None:
    """The default `ClockReport`: an error event in the library's log."""
    log_event(log, logging.ERROR, "clock_skew", None, message)


def newest_hour_end(lake: Path | LakeTree, as_of: datetime, on_unreadable: OnUnreadable = raise_unreadable
                    ) -> datetime | None:
    """The end of the newest hour any instrument holds, snapshots or tape (looked for in the RECENT days
    before `as_of` first, then anywhere); None for an empty lake."""
    tree = as_tree(lake)
    for after in (as_of - RECENT, None):
        newest = max((max(hours) for prefix in (layout.RAW_PREFIX, layout.TAPE_PREFIX)
                      for inst_id in tree.instruments(prefix)
                      if (hours := tree.hour_files(inst_id, after=after, on_unreadable=on_unreadable, prefix=prefix))),
                     default=None)
        if newest is not None:
            return newest + layout.HOUR
    return None


def lake_time(lake: Path | LakeTree, as_of: datetime, on_unreadable: OnUnreadable = raise_unreadable,
              report: ClockReport = report_clock_skew) -> datetime:
    """The time compression and retention act as of: `as_of`, unless the pipeline's clock runs more than
    CLOCK_TOLERANCE ahead of the newest data in the lake; then the end of that data (an hour newer than
    the newest data less the due age is never touched), and `report` says so. A clock ahead of the lake
    is an error to look at (or collectors that stopped), never a reason to delete live hours."""
    newest = newest_hour_end(lake, as_of, on_unreadable)
    if newest is None or as_of - newest <= CLOCK_TOLERANCE:
        return as_of
    report(f"the pipeline's clock ({iso(as_of)}) is {as_of - newest} ahead of the newest data in the lake (an hour "
           f"ending {iso(newest)}): compression and retention act as of {iso(newest)}; check the clock (NTP), or "
           "whether the collectors stopped")
    return newest


def compression_due(
    lake: Path | LakeTree,
    as_of: datetime,
    compress_after: timedelta,
    grace: timedelta,
    now: datetime | None = None,
    on_unreadable: OnUnreadable = raise_unreadable,
    prefix: Path = layout.RAW_PREFIX,
) -> list[LakeHour]:
    """Hours (of the dataset `prefix`) whose `.jsonl` still exists and that ended ≥ `compress_after`
    before `as_of` (the scheduled time) — all of them, however old — and are closed at `now` (never
    the open hour). Unlike retention this trusts the clock (a verified archive loses nothing, but a
    clock hours ahead could archive an hour a collector still appends to: not guarded yet)."""
    tree = as_tree(lake)
    cutoff = as_of - compress_after
    due: list[LakeHour] = []
    for inst_id in tree.instruments(prefix):
        for hour, kinds in tree.hour_files(inst_id, until=cutoff, on_unreadable=on_unreadable, prefix=prefix).items():
            if "records" not in kinds or not ended_at_least(hour, as_of, compress_after):
                continue
            if now is not None and not is_closed(hour, now, grace):
                continue
            if not is_closed(hour, as_of, grace):
                continue
            due.append(LakeHour(hour, inst_id))
    return sorted(due)
