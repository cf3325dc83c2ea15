"""Quality verdicts of one instrument-hour, decided from its `HourStats` (pure, no Dagster), and of
one hour of the full-resolution tape, from its `TapeHourStats` (`evaluate_tape`: `tape_no_gaps`,
`tape_coverage`, `tape_schema_valid`).

The same verdicts are emitted by the sensor as check evaluations when it registers an hour and
by the partitioned asset checks when a user (re)runs them, so both paths always agree.
Severity: gaps and checksum failures are WARN (the collector flagged and resynced them, the data
around them is still exact); the others are ERROR (the hour's data is incomplete or not trusted).
Hours in the original record format (without book_crc32, recv_ts_utc, checksum_ok; CONTRACT.md
§2.1) pass the same checks: what a record lacks is not checked, and a missing `checksum_ok` means
"not validated", never a checksum failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from l2_lake.format import layout
from l2_lake.format.backlog import read_backlog_file
from l2_lake.quality.hour_stats import HourStats
from l2_lake.quality.tape_stats import TapeHourStats
from l2_lake.store.collector_lock import running_collector

T = TypeVar("T")

NO_GAPS = "no_gaps"
NO_CHECKSUM_FAILURES = "no_checksum_failures"
COVERAGE = "coverage"
NO_CROSSED_BOOKS = "no_crossed_books"
SCHEMA_VALID = "schema_valid"
TIMESTAMPS_VALID = "timestamps_valid"
COLLECTOR_FRESHNESS = "collector_freshness"
TAPE_NO_GAPS = "tape_no_gaps"
TAPE_COVERAGE = "tape_coverage"
TAPE_SCHEMA_VALID = "tape_schema_valid"

HOUR_CHECKS: tuple[str, ...] = (
    NO_GAPS, NO_CHECKSUM_FAILURES, COVERAGE, NO_CROSSED_BOOKS, SCHEMA_VALID, TIMESTAMPS_VALID
)
TAPE_CHECKS: tuple[str, ...] = (TAPE_NO_GAPS, TAPE_COVERAGE, TAPE_SCHEMA_VALID)
WARN_CHECKS = frozenset({NO_GAPS, NO_CHECKSUM_FAILURES, TAPE_NO_GAPS})

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
    TAPE_NO_GAPS: "Replaying the tape hour through a fresh engine finds no sequence gap (the engine's own count; "
                  "it never bridges one). WARN.",
    TAPE_COVERAGE: "The engine trusted its book ≥ threshold % of the hour (from each sync to the next loss) and "
                   "applied ≥ threshold % of the hour's messages to a trusted book "
                   "(LakeResource.coverage_threshold_pct, default 95); metadata counts the messages.",
    TAPE_SCHEMA_VALID: "Every line is a tape line of a known kind the engine can take, every ws frame decodes, the "
                       "file begins with a book line and its last line is complete.",
}


@dataclass(frozen=True)
class Verdict:
    """One check's outcome, ready to become an AssetCheckResult / AssetCheckEvaluation."""

    check_name: str
    passed: bool
    warn: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def verdict(name: str, passed: bool, description: str, **meta: Any) -> Verdict:
    """A verdict of the check `name` (WARN if it is one of `WARN_CHECKS`)."""
    return Verdict(name, passed, name in WARN_CHECKS, description, meta)


def evaluate_hour(stats: HourStats, coverage_threshold_pct: float) -> list[Verdict]:
    """The six per-hour verdicts, in `HOUR_CHECKS` order."""
    scan = stats.scan
    examples = "\n".join(scan.examples)
    none = stats.source is None
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


def evaluate_tape(stats: TapeHourStats, coverage_threshold_pct: float) -> list[Verdict]:
    """The three verdicts of a tape hour, in `TAPE_CHECKS` order."""
    scan = stats.scan
    examples = "\n".join(scan.examples)
    by_reason = ", ".join(f"{n} {reason}" for reason, n in sorted(scan.lost.items()))
    return [
        verdict(TAPE_NO_GAPS, scan.gaps == 0, f"{scan.gaps} engine gap(s); {stats.resyncs} resync(s)"
                + (f" ({by_reason})" if by_reason else ""),
                gaps=scan.gaps, resyncs=stats.resyncs, resyncs_by_reason=dict(sorted(scan.lost.items())),
                checksum_failures=scan.checksum_failures, drops=scan.drops),
        verdict(TAPE_COVERAGE, min(stats.coverage_pct, stats.message_coverage_pct) >= coverage_threshold_pct,
                "no tape file for this hour" if stats.source is None else
                f"trusted book {stats.coverage_pct:.2f}% of the hour ({stats.trusted_seconds:.1f} s) and "
                f"{stats.message_coverage_pct:.2f}% of its messages ({scan.trusted_messages} of "
                f"{scan.replay.messages} applied to a trusted book; threshold {coverage_threshold_pct:g}% for "
                f"both), {stats.messages_per_second:.1f}/s",
                coverage_pct=round(stats.coverage_pct, 3), message_coverage_pct=round(stats.message_coverage_pct, 3),
                trusted_seconds=round(stats.trusted_seconds, 3),
                threshold_pct=coverage_threshold_pct, messages=scan.replay.messages,
                trusted_messages=scan.trusted_messages, ws_frames=scan.replay.frames,
                messages_per_second=round(stats.messages_per_second, 3)),
        verdict(TAPE_SCHEMA_VALID, scan.schema_problems == 0,
                f"{scan.schema_problems} schema problem(s) in {scan.lines} line(s)"
                + (f":\n{examples}" if examples else ""),
                schema_problems=scan.schema_problems, **scan.problem_counts(), lines=scan.lines),
    ]


def unreadable_hour_verdict(error: str, check_name: str = SCHEMA_VALID) -> Verdict:
    """The schema verdict (`schema_valid`, or `check_name`) of an hour that could not be read at all
    (the others are unknown)."""
    return Verdict(check_name, False, False, f"the hour could not be read: {error}", {"error": error})


def read_verdicts(stats: T | None, error: str | None, evaluate: Callable[[T], list[Verdict]],
                  schema_check: str) -> list[Verdict]:
    """`evaluate(stats)`, or only a failed `schema_check` when the hour could not be read (`error`;
    the others are unknown)."""
    return [unreadable_hour_verdict(error or "", schema_check)] if stats is None else evaluate(stats)


def hour_verdicts(stats: HourStats | None, error: str | None, coverage_threshold_pct: float) -> list[Verdict]:
    """The verdicts of one hour: the six of `evaluate_hour`, or only a failed `schema_valid` (`read_verdicts`)."""
    return read_verdicts(stats, error, lambda s: evaluate_hour(s, coverage_threshold_pct), SCHEMA_VALID)


def tape_verdicts(stats: TapeHourStats | None, error: str | None, coverage_threshold_pct: float) -> list[Verdict]:
    """The verdicts of one tape hour: the three of `evaluate_tape`, or only a failed `tape_schema_valid`."""
    return read_verdicts(stats, error, lambda s: evaluate_tape(s, coverage_threshold_pct), TAPE_SCHEMA_VALID)


LISTED_MEMBERS = 10  # failing instruments a group's verdict names in its description (metadata has them all)


def group_verdicts(by_member: Mapping[str, Sequence[Verdict]]) -> list[Verdict]:
    """The verdicts of a group of instrument-hours (instId → that hour's verdicts), one per check any
    member was judged by: passed when every member judged passed; the description names the failing
    members and why; the metadata lists them, and every member's outcome under `by_instrument`."""
    out = []
    for name in dict.fromkeys(v.check_name for verdicts in by_member.values() for v in verdicts):
        judged = {inst: v for inst, verdicts in sorted(by_member.items()) for v in verdicts if v.check_name == name}
        failing = {inst: v for inst, v in judged.items() if not v.passed}
        if failing:
            named = list(failing)[:LISTED_MEMBERS]
            more = f"; … and {len(failing) - len(named)} more" if len(failing) > len(named) else ""
            description = (f"{len(failing)} of {len(judged)} instrument(s) fail: "
                           + "; ".join(f"{inst}: {failing[inst].description}" for inst in named) + more)
        else:
            description = f"all {len(judged)} instrument(s) pass"
        metadata = {"instruments": len(judged), "failed_instruments": ", ".join(failing),
                    "by_instrument": {inst: {"passed": v.passed, "description": v.description, **v.metadata}
                                      for inst, v in judged.items()}}
        out.append(Verdict(name, not failing, next(iter(judged.values())).warn, description, metadata))
    return out


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
    running: dict[str, str] = field(default_factory=dict)  # data dir → PID of the collector holding its lock
    places: tuple[str, ...] = ()  # the data dirs looked at

    @property
    def stopped(self) -> bool:
        """No collector runs in any data dir looked at: nothing is being written, by choice or by a crash.
        That is a warning to look at, not the alarm of a running collector that writes nothing."""
        return not self.running

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
        where = ", ".join(self.places)
        if not self.stale:
            desc = f"fresh ({described})"
        elif self.stopped:
            desc = (f"stopped: no l2-collector is running in {where} (its lock is free), so nothing is written; "
                    f"last writes: {described}. Start the collector, or ignore this while it is meant to be off")
        else:
            pids = ", ".join(f"PID {pid}" for pid in self.running.values())
            desc = (f"stale: the collector is running ({pids}) but {', '.join(self.stale)} wrote nothing within "
                    f"{self.max_age.total_seconds():.0f}s ({described}); look at its log and status line")
        meta: dict[str, Any] = {f"age_s[{i}]": (-1.0 if a is None else round(a, 1))
                                for i, a in self.ages_seconds.items()}
        meta["stale_instruments"] = len(self.stale)
        meta["unreadable_instruments"] = len(self.unreadable)
        meta["max_age_s"] = self.max_age.total_seconds()
        meta["collector"] = "running" if self.running else "stopped"
        if self.backlogs:  # shipping to object storage is on: what waits in the spool(s)
            meta.update(ship_backlog_metadata(self.backlogs))
            desc += (f"; ship backlog {meta['ship_pending_hours']} hour(s), {meta['ship_pending_bytes'] / 1e6:.1f} MB"
                     + (f", oldest {meta['ship_oldest_pending_hour']}" if meta["ship_pending_hours"] else ""))
        return Verdict(COLLECTOR_FRESHNESS, self.passed, self.stopped and not self.unreadable, desc, meta)


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

    Whether a collector holds each data dir's lock tells a stopped collector (a warning: nothing
    runs there) from a stale one (an error: it runs but writes nothing).

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
    roots = list(replicas or [data_dir])
    backlogs = [b for root in roots if isinstance(b := read_backlog_file(root), dict)]
    running = {str(root): pid for root in roots if (pid := running_collector(root)) is not None}
    return Freshness(passed, ages, max_age, unreadable, backlogs, running, tuple(map(str, roots)))
