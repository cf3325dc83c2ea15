"""Time arithmetic of the lake: UTC hours, when an hour counts as closed, and "now".

Everything here is pure (no I/O). The hour containing an instant is `l2_lake.format.layout.hour_floor`
(one definition, shared with the collector). A closed hour is one whose end lies at least `grace` in the
past, so the collector's last appends after a rollover (a few seconds) are never cut off. The
current UTC hour is always open.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from l2_lake.format.layout import HOUR

DEFAULT_GRACE = timedelta(minutes=2)


def utc(dt: datetime) -> datetime:
    """`dt` as an aware UTC datetime (naive values are taken to be UTC already)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def now_utc() -> datetime:
    """The wall clock, aware UTC."""
    return datetime.now(UTC)


def hour_end(hour: datetime) -> datetime:
    """The first instant after `hour`."""
    return hour + HOUR


def is_closed(hour: datetime, now: datetime, grace: timedelta = DEFAULT_GRACE) -> bool:
    """True when `hour` ended at least `grace` before `now` (the open hour never is)."""
    return hour_end(hour) + grace <= utc(now)


def ended_at_least(hour: datetime, as_of: datetime, age: timedelta) -> bool:
    """True when `hour` ended `age` or more before `as_of`."""
    return hour_end(hour) <= utc(as_of) - age


def parse_utc(text: str) -> datetime:
    """An ISO-8601 timestamp (`Z` or offset; naive means UTC) as aware UTC."""
    return utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def iso(dt: datetime) -> str:
    """Aware UTC datetime → `2026-11-25T13:00:00Z`."""
    return utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")
