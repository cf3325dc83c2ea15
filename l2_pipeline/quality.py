"""Quality verdicts of one instrument-hour, decided from its `HourStats` (pure, no Dagster).

The same verdicts are emitted by the sensor as check evaluations when it registers an hour and
by the partitioned asset checks when a user (re)runs them, so both paths always agree.
Severity: gaps and checksum failures are WARN (the collector flagged and resynced them, the data
around them is still exact); the others are ERROR (the hour's data is incomplete or not trusted).
Hours in the original record format (without book_crc32, recv_ts_utc, checksum_ok; CONTRACT.md
§2.1) pass the same checks: what a record lacks is not checked, and a missing `checksum_ok` means
"not validated", never a checksum failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from collector import layout
from collector.ship import read_backlog_file
from l2_pipeline.hour_stats import HourStats

NO_GAPS = "no_gaps"
NO_CHECKSUM_FAILURES = "no_checksum_failures"
COVERAGE = "coverage"
NO_CROSSED_BOOKS = "no_crossed_books"
SCHEMA_VALID = "schema_valid"
TIMESTAMPS_VALID = "timestamps_valid"
COLLECTOR_FRESHNESS = "collector_freshness"

HOUR_CHECKS: tuple[str, ...] = (
    NO_GAPS, NO_CHECKSUM_FAILURES, COVERAGE, NO_CROSSED_BOOKS, SCHEMA_VALID, TIMESTAMPS_VALID
)
WARN_CHECKS = frozenset({NO_GAPS, NO_CHECKSUM_FAILURES})

DESCRIPTIONS: dict[str, str] = {
    NO_GAPS: "No sequence gap in the hour (gap events / gap_detected markers). WARN.",
    NO_CHECKSUM_FAILURES: "No OKX checksum mismatch in the hour (events / checksum_ok=false markers; records "
                          "without checksum_ok are not validated, not failures). WARN.",
    COVERAGE: "Records ≥ threshold % of 3600/cadence (LakeResource.coverage_threshold_pct, default 95).",
    NO_CROSSED_BOOKS: "No record with best bid ≥ best ask.",
    SCHEMA_VALID: "Every line parses; fields of the original or extended format in order, sorted levels, "
                  "book_crc32 verifies where present, instId matches.",
    TIMESTAMPS_VALID: "Every timestamp_utc inside the partition hour and strictly increasing.",
    COLLECTOR_FRESHNESS: "For each configured instrument, the newest write to its current hour's file (or, just "
                         "after a rollover, the previous hour's) is at most freshness_minutes old.",
}


@dataclass(frozen=True)
class Verdict:
    """One check's outcome, ready to become an AssetCheckResult / AssetCheckEvaluation."""

    check_name: str
    passed: bool
    warn: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def evaluate_hour(stats: HourStats, coverage_threshold_pct: float) -> list[Verdict]:
    """The six per-hour verdicts, in `HOUR_CHECKS` order."""
    scan = stats.scan
    examples = "\n".join(scan.examples)
    none = stats.source is None

    def verdict(name: str, passed: bool, description: str, **meta: Any) -> Verdict:
        return Verdict(name, passed, name in WARN_CHECKS, description, meta)

    out = [
        verdict(NO_GAPS, stats.gaps == 0, f"{stats.gaps} gap(s)", gaps=stats.gaps,
                gap_events=stats.events.count("gap"), gap_markers=scan.gap_markers, resyncs=stats.resyncs),
        verdict(NO_CHECKSUM_FAILURES, stats.checksum_failures == 0,
                f"{stats.checksum_failures} checksum failure(s)" + (
                    f"; {scan.checksum_not_recorded} record(s) without checksum_ok (not validated)"
                    if scan.checksum_not_recorded else ""),
                checksum_failures=stats.checksum_failures, mismatch_events=stats.events.count("checksum_mismatch"),
                checksum_markers=scan.checksum_markers, checksum_not_recorded=scan.checksum_not_recorded),
        verdict(COVERAGE, stats.coverage_pct >= coverage_threshold_pct,
                "no records file for this hour" if none else
                f"coverage {stats.coverage_pct:.2f}% (threshold {coverage_threshold_pct:g}%)",
                coverage_pct=round(stats.coverage_pct, 3), records=scan.records,
                expected_records=stats.expected_records, threshold_pct=coverage_threshold_pct),
        verdict(NO_CROSSED_BOOKS, scan.crossed_records == 0, f"{scan.crossed_records} crossed record(s)",
                crossed_records=scan.crossed_records),
        verdict(SCHEMA_VALID, scan.invalid_lines == 0,
                f"{scan.invalid_lines} invalid line(s) of {scan.lines}, record format {scan.record_format}"
                + (f":\n{examples}" if examples else ""),
                invalid_lines=scan.invalid_lines, unparseable_lines=scan.bad_json,
                invalid_records=scan.invalid_records, lines=scan.lines, record_format=scan.record_format),
        verdict(TIMESTAMPS_VALID, scan.out_of_hour == 0 and scan.non_increasing == 0,
                f"{scan.out_of_hour} outside the hour, {scan.non_increasing} not increasing",
                out_of_hour=scan.out_of_hour, non_increasing=scan.non_increasing),
    ]
    return out


def unreadable_hour_verdict(error: str) -> Verdict:
    """The `schema_valid` verdict of an hour that could not be read at all (the others are unknown)."""
    return Verdict(SCHEMA_VALID, False, False, f"the hour could not be read: {error}", {"error": error})


def hour_verdicts(stats: HourStats | None, error: str | None, coverage_threshold_pct: float) -> list[Verdict]:
    """The verdicts of one hour: the six of `evaluate_hour`, or only a failed `schema_valid` when it
    could not be read (`error`; the others are unknown)."""
    return [unreadable_hour_verdict(error or "")] if stats is None else evaluate_hour(stats, coverage_threshold_pct)


FAILED_PREFIX = "FAILED: "


def quality_summary(verdicts: list[Verdict]) -> str:
    """One line for an hour's metadata: "FAILED: no_gaps, coverage" or "passed (6 checks)"."""
    failed = [v.check_name for v in verdicts if not v.passed]
    return f"{FAILED_PREFIX}{', '.join(failed)}" if failed else f"passed ({len(verdicts)} checks)"


def failed_in_summary(summary: str) -> tuple[str, ...]:
    """The check names a `quality_summary` line lists as failed."""
    return tuple(summary.removeprefix(FAILED_PREFIX).split(", ")) if summary.startswith(FAILED_PREFIX) else ()


def worst_status(failed_checks: tuple[str, ...]) -> str:
    """"failed" if an ERROR check failed, "warning" if only WARN checks did, else "passed"."""
    if any(name not in WARN_CHECKS for name in failed_checks):
        return "failed"
    return "warning" if failed_checks else "passed"


@dataclass(frozen=True)
class Freshness:
    """Age of the newest write per expected instrument."""

    passed: bool
    ages_seconds: dict[str, float | None]  # None: nothing written in the current or previous hour
    max_age: timedelta
    unreadable: dict[str, str] = field(default_factory=dict)  # instId → "path: error" of a file it cannot stat
    backlogs: list[dict[str, Any]] = field(default_factory=list)  # the shippers' `.l2-ship-backlog.json` (lake_url)

    @property
    def stale(self) -> list[str]:
        limit = self.max_age.total_seconds()
        return [i for i, age in self.ages_seconds.items() if age is None or age > limit]

    def _describe(self, inst_id: str, age: float | None) -> str:
        if inst_id in self.unreadable:
            return f"{inst_id}: unreadable {self.unreadable[inst_id]}"
        return f"{inst_id}: {'no file' if age is None else f'{age:.0f}s'}"

    def verdict(self) -> Verdict:
        described = ", ".join(self._describe(i, a) for i, a in sorted(self.ages_seconds.items()))
        desc = (f"stale: {', '.join(self.stale)} ({described})" if self.stale else f"fresh ({described})")
        meta: dict[str, Any] = {f"age_s[{i}]": (-1.0 if a is None else round(a, 1))
                                for i, a in self.ages_seconds.items()}
        meta["stale_instruments"] = len(self.stale)
        meta["unreadable_instruments"] = len(self.unreadable)
        meta["max_age_s"] = self.max_age.total_seconds()
        if self.backlogs:  # shipping to object storage is on: what waits in the spool(s)
            meta.update(ship_backlog_metadata(self.backlogs))
            desc += (f"; ship backlog {meta['ship_pending_hours']} hour(s), {meta['ship_pending_bytes'] / 1e6:.1f} MB"
                     + (f", oldest {meta['ship_oldest_pending_hour']}" if meta["ship_pending_hours"] else ""))
        return Verdict(COLLECTOR_FRESHNESS, self.passed, False, desc, meta)


def ship_backlog_metadata(backlogs: list[dict[str, Any]]) -> dict[str, Any]:
    """The shippers' backlogs summed (hours, bytes, failures) for check metadata."""
    oldest = [b["oldest_pending_hour"] for b in backlogs if b.get("oldest_pending_hour")]
    errors = [b["last_error"] for b in backlogs if b.get("last_error")]
    return {
        "ship_pending_hours": sum(int(b.get("pending_hours") or 0) for b in backlogs),
        "ship_pending_bytes": sum(int(b.get("pending_bytes") or 0) for b in backlogs),
        "ship_oldest_pending_hour": min(oldest) if oldest else "",
        "ship_consecutive_failures": max(int(b.get("consecutive_failures") or 0) for b in backlogs),
        "ship_stuck_files": sum(len(b.get("stuck_files") or ()) for b in backlogs),
        "ship_last_error": errors[0] if errors else "",
    }


def collector_freshness(data_dir: Path, instruments: list[str], now: datetime, max_age: timedelta,
                        *, replicas: Sequence[Path] = ()) -> Freshness:
    """Newest mtime of each instrument's current- and previous-hour records/events files vs `now`,
    in `data_dir`, or with redundant capture in the replicas' spools (`replicas`: the lake's raw
    hours are then written by the merge, after the hour; one fresh replica is a fresh collector).
    With shipping to object storage on, the shippers' backlogs go into the verdict's metadata.

    The previous hour counts so the minute after a rollover (before the first record of the new
    hour) is not reported stale. A path that cannot be stat'ed for another reason than its absence
    (permission denied, I/O error) fails the check and is named in its description."""
    current = now.replace(minute=0, second=0, microsecond=0)
    ages: dict[str, float | None] = {}
    unreadable: dict[str, str] = {}
    for inst_id in instruments:
        newest: float | None = None
        places = [(root, hour) for root in (replicas or [data_dir]) for hour in (current, current - layout.HOUR)]
        for root, hour in places:
            for path in (layout.records_path(root, inst_id, hour), layout.events_path(root, inst_id, hour)):
                try:
                    mtime = path.stat().st_mtime
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as exc:
                    unreadable[inst_id] = f"{path}: {exc.strerror or exc}"
                    continue
                newest = mtime if newest is None else max(newest, mtime)
        ages[inst_id] = None if newest is None else max(0.0, now.timestamp() - newest)
    limit = max_age.total_seconds()
    passed = bool(instruments) and not unreadable and all(a is not None and a <= limit for a in ages.values())
    backlogs = [b for root in (replicas or [data_dir]) if isinstance(b := read_backlog_file(root), dict)]
    return Freshness(passed, ages, max_age, unreadable, backlogs)
