"""Redundant capture: the replicas of one instrument-hour merged into the canonical hour of the lake.

Two or more collectors (`l2-collector run --collector-id a`, `… b`), usually on different hosts,
capture the same instruments into their own data dirs (spools, laid out like the lake). `merge_hour`
merges one instrument-hour of every replica into the usual files of the lake
(`raw/okx/l2_perps/{instId}/{YYYY-MM-DD}/{HH}.jsonl` and `{HH}.events.jsonl`, `l2_lake.format.layout`),
so every asset, check and reader downstream works on the canonical hour unchanged. Pure: no Dagster
(`l2_pipeline.assets.replicas` is the asset, its check and its sensor).

Merge rules (replicas in their configured order, `LakeResource.replica_dirs`):
- Each replica's hour is read from its `.jsonl` (or its `.jsonl.gz` once archived). A line is a
  candidate if it is a JSON object with the hour's `instId`, a `timestamp_utc` inside the hour (the
  first of a replica's lines at one timestamp) and the fields the merge decides on; the record kept
  at a timestamp must also pass `l2_lake.format.record.record_problems` (crossed books allowed:
  `no_crossed_books` reports them), else the next candidate is taken. Other lines (a torn tail, a
  corrupt line) are left out and counted per replica (`invalid_lines`).
- One record per `timestamp_utc`, in time order: the canonical hour holds every timestamp any replica
  holds (its coverage is the union of the replicas'). Records are copied byte for byte, never
  altered. Collectors tick each instrument at the same wall-clock moments (multiples of the cadence
  plus the instrument's fixed offset, `collector.cadence`), so replicas mostly write the same
  timestamps; when their ticks straddle a message (one wrote the book before it, one after), both
  records are kept, less than a cadence apart (`close_pairs` counts those under half a cadence).
- At one timestamp, an exact record (`gap_detected` false and `checksum_ok` not false) is preferred
  over a flagged one (`flagged_superseded` counts those replaced); among equals, the replica listed
  first wins.
- Exact records of two or more replicas at the same `seqId` and timestamp must hold the same levels:
  the canonical JSON encodings (`orjson`) of `bids_top400` and of `asks_top400` are compared (as
  sha256 digests). Equal: the record counts as `agreed`. Different: a `disagreement` (the first
  replica's record is kept, unchanged; `replicas_agree` fails and lists examples). Flagged records make
  no promise about their levels (a gap marker holds the last trusted book), so they are never
  compared. Exact records at the same timestamp with different `seqId`s (two messages in one
  millisecond, each replica's last before its tick) are `seq_conflicts`: the first replica's is kept.
- Events: every replica's sidecar lines of the hour, each with `"replica": "<id>"` added as its last
  field, in `ts_utc` order (ties: replica order, then file order). Lines that are not JSON objects
  with a valid `ts_utc` are left out and counted.

Writing: the canonical `.jsonl` (when a replica has a records file) and `.events.jsonl` (when a
replica has an events file) are written atomically (`l2_lake.store.files.atomic_write`), and only if
their content changes: a merge of unchanged replicas is `unchanged` and touches nothing, so the hour
keeps its `stats_cache.fingerprint`. A canonical hour that is already archived (`.jsonl.gz`) and
equal is left alone; a different one gets a new `.jsonl` (the compression schedule archives it
again). A merge never deletes a canonical file, and refuses (`ReplicaDataLost`) to replace a
canonical hour holding a timestamp that no replica holds any more (a spool cleaned or truncated
since, or hours a collector wrote into the lake itself before replicas were configured), or a
canonical events file holding a line no replica holds any more (the error names the replicas the
lines came from): merges are monotone.

Refused: the open hour (or inside the grace; `allow_open=True` merges it anyway, for tests and
operators looking at the current hour: the result is then a snapshot), a replica dir that is the
lake itself, and a lake a collector is running in (its `.l2-collector.lock` is held): the merge's
atomic replace would cut off that collector's appends.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from l2_lake.format import layout
from l2_lake.format.hour_content import open_content
from l2_lake.format.hours import DEFAULT_GRACE, is_closed, iso, now_utc
from l2_lake.format.record import format_ts_ms, parse_ts_ms, record_problems
from l2_lake.quality.hour_stats import records_source
from l2_lake.quality.stats_cache import fingerprint
from l2_lake.store.collector_lock import COLLECTOR_LOCK, running_collector
from l2_lake.store.files import atomic_write
from l2_lake.tiers.archive import OpenHourError

MAX_EXAMPLES = 5
REPLICA_FIELD = "replica"


class ReplicaDataLost(ValueError):
    """The canonical hour holds records no replica holds any more; it was not replaced."""


class Entry(NamedTuple):
    """One valid record line of a replica."""

    ts_ms: int
    seq_id: int | None
    exact: bool
    bids: bytes  # sha256 of the canonical JSON encoding of bids_top400
    asks: bytes
    line: bytes  # the line as the replica holds it, with its newline
    number: int  # its line number


@dataclass
class ReplicaHour:
    """What one replica holds of the hour and what the merge took from it."""

    replica: str
    source: Path | None = None  # the records file read (.jsonl or .jsonl.gz); None without one
    events_source: Path | None = None
    records: int = 0  # valid records
    invalid_lines: int = 0
    events: int = 0
    invalid_event_lines: int = 0
    only: int = 0  # records at a timestamp no other replica holds
    kept: int = 0  # records of this replica in the canonical hour
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)


@dataclass
class MergeReport:
    """What `merge_hour` did for one instrument-hour. `status`: merged (a canonical file was written),
    unchanged (the canonical files already hold the merge) or no_data (no replica has a file of the hour)."""

    inst_id: str
    hour: datetime
    status: str
    path: Path  # the canonical records file
    events_path: Path
    cadence_seconds: float
    fingerprint: str  # of the replicas' files before they were read (`replica_fingerprint`)
    replicas: list[ReplicaHour]
    records: int = 0
    events: int = 0
    agreed: int = 0  # timestamps where ≥ 2 replicas hold exact records at the same seqId with identical levels
    disagreements: int = 0  # … with different levels
    disagreement_examples: list[str] = field(default_factory=list)
    flagged_superseded: int = 0  # flagged records replaced by another replica's exact record at the same timestamp
    seq_conflicts: int = 0  # exact records at the same timestamp with different seqIds
    # consecutive canonical records less than half a cadence apart: the replicas' ticks straddled a message (one
    # wrote the book before it, one after), which is why the canonical hour can hold more than one per cadence
    close_pairs: int = 0
    seconds: float = 0.0
    kept_ts: list[int] = field(default_factory=list, repr=False)  # the canonical records' timestamps (ms)

    @property
    def expected_records(self) -> float:
        return 3600 / self.cadence_seconds

    def coverage_pct(self, records: int) -> float:
        return round(100.0 * records / self.expected_records, 3)

    @property
    def single_replica_records(self) -> int:
        """Canonical records that only one replica had."""
        return sum(r.only for r in self.replicas)

    @property
    def invalid_lines(self) -> int:
        return sum(r.invalid_lines for r in self.replicas)

    @property
    def empty(self) -> bool:
        """A replica has a records file but the merged hour holds no record."""
        return self.status != "no_data" and not self.records

    @property
    def warning(self) -> str | None:
        problems = []
        if self.disagreements:
            problems.append(f"{self.disagreements} record(s) at the same seqId and timestamp differ between replicas "
                            f"(kept the first replica's), e.g. {self.disagreement_examples[0]}")
        for r in self.replicas:
            if r.invalid_lines or r.invalid_event_lines:
                problems.append(f"replica {r.replica}: left out {r.invalid_lines} invalid record line(s) and "
                                f"{r.invalid_event_lines} invalid event line(s)"
                                + (f", e.g. {r.examples[0]}" if r.examples else ""))
        return "; ".join(problems) or None

    def replica_table(self) -> dict[str, dict[str, Any]]:
        """replica → its figures: records, coverage_pct (of the cadence's expected records), share_pct
        (of the canonical records), only, kept, invalid_lines, events, source."""
        return {
            r.replica: {
                "records": r.records,
                "coverage_pct": self.coverage_pct(r.records),
                "share_pct": round(100.0 * r.records / self.records, 3) if self.records else 0.0,
                "only": r.only,
                "kept": r.kept,
                "invalid_lines": r.invalid_lines,
                "events": r.events,
                "invalid_event_lines": r.invalid_event_lines,
                "source": str(r.source) if r.source else "",
            }
            for r in self.replicas
        }

    def metadata(self) -> dict[str, Any]:
        """Plain-value metadata (numbers first, flat per replica so the UI plots them over partitions)."""
        meta: dict[str, Any] = {
            "status": self.status,
            "records": self.records,
            "coverage_pct": self.coverage_pct(self.records),
            "agreed": self.agreed,
            "disagreements": self.disagreements,
            "single_replica_records": self.single_replica_records,
            "flagged_superseded": self.flagged_superseded,
            "seq_conflicts": self.seq_conflicts,
            "close_pairs": self.close_pairs,
            "invalid_lines": self.invalid_lines,
            "events": self.events,
        }
        table = self.replica_table()
        for replica, figures in table.items():
            meta[f"replica_{replica}_records"] = figures["records"]
            meta[f"replica_{replica}_coverage_pct"] = figures["coverage_pct"]
            meta[f"replica_{replica}_only"] = figures["only"]
        meta.update({
            "replicas": table,
            "disagreement_examples": list(self.disagreement_examples),
            "path": str(self.path),
            "replica_fingerprint": self.fingerprint,
            "seconds": round(self.seconds, 3),
        })
        return meta


def replica_fingerprint(replicas: Mapping[str, Path], inst_id: str, hour: datetime) -> str:
    """`id=<stats_cache.fingerprint of that replica's hour>` per replica, `|`-separated: changes when
    any replica's file of the hour appears, grows, is rewritten or archived."""
    return "|".join(f"{rid}={fingerprint(Path(d), inst_id, hour)}" for rid, d in replicas.items())


def _digest(value: Any) -> bytes:
    return hashlib.sha256(orjson.dumps(value)).digest()


def _read_records(replica: ReplicaHour, path: Path, inst_id: str, hour: datetime) -> list[Entry]:
    """The records of one replica's file, in file order: lines that are JSON objects of this instrument
    with a timestamp inside the hour (the first one per timestamp) and the fields the merge decides on.
    The rest of the contract is checked only for the record the merge keeps (`_valid`)."""
    with open_content(path) as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline; else a torn last line
    if tail:
        replica.invalid_lines += 1
        replica.note(f"torn last line ({len(tail)} bytes without a newline)")
    start_ms = int(hour.timestamp() * 1000)
    end_ms = start_ms + layout.HOUR_MS
    entries: list[Entry] = []
    seen: set[int] = set()
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            rec = orjson.loads(line)
            ts = parse_ts_ms(rec["timestamp_utc"])
            bids, asks, gap = rec["bids_top400"], rec["asks_top400"], rec["gap_detected"]
            usable = (rec["instId"] == inst_id and type(bids) is list and type(asks) is list and type(gap) is bool
                      and rec.get("checksum_ok") in (None, True, False))
            problem = None if usable else "not a record of this instrument"
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = "not JSON" if isinstance(exc, orjson.JSONDecodeError) else "not a record"
        if problem is None and not start_ms <= ts < end_ms:
            problem = f"timestamp {rec['timestamp_utc']} outside the hour"
        elif problem is None and ts in seen:
            problem = f"second record at {rec['timestamp_utc']}"
        if problem is not None:
            replica.invalid_lines += 1
            replica.note(f"line {number}: {problem}")
            continue
        seen.add(ts)
        exact = gap is False and rec.get("checksum_ok") is not False
        entries.append(Entry(ts, rec.get("seqId"), exact, _digest(bids), _digest(asks), line + b"\n", number))
    replica.records = len(entries)
    return entries


def _valid(entry: Entry) -> str | None:
    """The first contract problem of a record line (`record_problems`; crossed books allowed), or None."""
    problems = record_problems(orjson.loads(entry.line), check_crossed=False)
    return problems[0] if problems else None


def _read_events(replica: ReplicaHour, path: Path, order: int) -> list[tuple[int, int, int, bytes]]:
    """(ts, replica order, line number, line with the replica field) of one replica's events file."""
    out = []
    lines = path.read_bytes().split(b"\n")
    if lines.pop():
        replica.invalid_event_lines += 1
        replica.note("events: torn last line")
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            obj = orjson.loads(line)
            ts = parse_ts_ms(obj["ts_utc"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            replica.invalid_event_lines += 1
            replica.note(f"events line {number}: not an event object with a valid ts_utc")
            continue
        obj.pop(REPLICA_FIELD, None)
        obj[REPLICA_FIELD] = replica.replica
        out.append((ts, order, number, orjson.dumps(obj) + b"\n"))
    replica.events = len(out)
    return out


def _existing(data_dir: Path, inst_id: str, hour: datetime) -> bytes | None:
    """The canonical hour's records as they are now (the `.jsonl`, else the archive's content)."""
    source, _ = records_source(data_dir, inst_id, hour)
    if source is None:
        return None
    with open_content(source) as f:
        return f.read()


def _timestamps(data: bytes) -> set[str]:
    out = set()
    for line in data.split(b"\n"):
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            out.add(orjson.loads(line)["timestamp_utc"])
    return out


def _refuse_to_shrink(target: Path, held: bytes, data: bytes) -> None:
    """ReplicaDataLost if the canonical events file `target`, holding `held`, would lose a line by becoming
    `data`: named with the replicas the lost lines came from (their `replica` field)."""
    lost = set(held.splitlines()) - set(data.splitlines())
    if not lost:
        return
    sources = set()
    for line in lost:
        try:
            sources.add(str(orjson.loads(line).get("replica", "?")))
        except (orjson.JSONDecodeError, AttributeError):
            sources.add("?")
    raise ReplicaDataLost(
        f"{target} holds {len(lost)} event line(s) that no replica holds now (from replica(s) "
        f"{', '.join(sorted(sources))}): that replica's events file was removed or truncated since the last merge. "
        f"Restore it, or move the canonical events file away to merge only what the replicas hold")


def _refuse_running_collector(data_dir: Path) -> None:
    """A collector holding the lake's lock writes the lake itself: merging would race its appends."""
    pid = running_collector(data_dir)
    if pid is not None:
        raise ValueError(f"a collector is running in {data_dir} (PID {pid}, its {COLLECTOR_LOCK} is held): with "
                         "replicas, collectors write their own data dirs and only the merge writes the lake")


def _merge(inst_id: str, entries: list[list[Entry]], report: MergeReport) -> list[bytes]:
    """The canonical lines from each replica's entries (replica order), counting into `report`."""
    by_ts: dict[int, list[tuple[int, Entry]]] = defaultdict(list)
    for index, replica_entries in enumerate(entries):
        for entry in replica_entries:
            by_ts[entry.ts_ms].append((index, entry))
    names = [r.replica for r in report.replicas]
    lines = []
    for ts in sorted(by_ts):
        candidates = by_ts[ts]
        if len(candidates) == 1:
            report.replicas[candidates[0][0]].only += 1
        exact = [c for c in candidates if c[1].exact]
        kept = "none: no valid record"
        for index, entry in exact + [c for c in candidates if not c[1].exact]:  # preference order
            problem = _valid(entry)
            if problem is None:
                if entry.exact and len(exact) < len(candidates):
                    report.flagged_superseded += 1
                report.replicas[index].kept += 1
                lines.append(entry.line)
                report.kept_ts.append(ts)
                kept = f"kept {names[index]}'s"
                break
            replica = report.replicas[index]
            replica.records -= 1
            replica.invalid_lines += 1
            replica.note(f"line {entry.number}: {problem}")
        by_seq: dict[int | None, list[tuple[int, Entry]]] = defaultdict(list)
        for c in exact:
            by_seq[c[1].seq_id].append(c)
        if len(by_seq) > 1:
            report.seq_conflicts += 1
        for seq_id, group in by_seq.items():
            if len(group) < 2:
                continue
            first = group[0][1]
            differing = [(i, e) for i, e in group[1:] if (e.bids, e.asks) != (first.bids, first.asks)]
            if not differing:
                report.agreed += 1
                continue
            report.disagreements += 1
            if len(report.disagreement_examples) < MAX_EXAMPLES:
                i, other = differing[0]
                sides = [side for side, a, b in (("bids", first.bids, other.bids), ("asks", first.asks, other.asks))
                         if a != b]
                report.disagreement_examples.append(
                    f"{inst_id} {format_ts_ms(ts)} seqId={seq_id}: {' and '.join(sides)} of replica "
                    f"{names[group[0][0]]} and replica {names[i]} differ ({kept})")
    return lines


def merge_hour(
    replicas: Mapping[str, Path],
    data_dir: Path,
    inst_id: str,
    hour: datetime,
    *,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    cadence_seconds: float = 2.0,
    allow_open: bool = False,
) -> MergeReport:
    """Merge the replicas' files of one instrument-hour into the canonical hour under `data_dir` (see
    the module docstring). Idempotent. Raises OpenHourError for the open hour unless `allow_open`,
    ReplicaDataLost if the canonical hour holds timestamps no replica holds, ValueError for a replica
    dir that is `data_dir` or a lake a collector is running in."""
    started = time.monotonic()
    data_dir = Path(data_dir)
    if not replicas:
        raise ValueError("no replica: give the replicas' data dirs (L2_REPLICA_DIRS=a=/spool/a,b=/spool/b)")
    for rid, directory in replicas.items():
        if Path(directory).resolve() == data_dir.resolve():
            raise ValueError(f"replica {rid}'s data dir {directory} is the lake itself: give each collector its own "
                             f"data dir (spool); the merge writes {data_dir}")
    if not allow_open and not is_closed(hour, now or now_utc(), grace):
        raise OpenHourError(f"{inst_id} {iso(hour)} is not closed yet (ends {hour + layout.HOUR:%H:%M} UTC + grace "
                            f"{grace}); the replicas' collectors may still be writing it")
    _refuse_running_collector(data_dir)
    target = layout.records_path(data_dir, inst_id, hour)
    events_target = layout.events_path(data_dir, inst_id, hour)
    report = MergeReport(inst_id, hour, "unchanged", target, events_target, cadence_seconds,
                         replica_fingerprint(replicas, inst_id, hour), [ReplicaHour(rid) for rid in replicas])
    entries: list[list[Entry]] = []
    events: list[tuple[int, int, int, bytes]] = []
    for order, (replica, directory) in enumerate(zip(report.replicas, replicas.values(), strict=True)):
        replica.source, _ = records_source(Path(directory), inst_id, hour)
        entries.append(_read_records(replica, replica.source, inst_id, hour) if replica.source else [])
        events_file = layout.events_path(Path(directory), inst_id, hour)
        if events_file.is_file():
            replica.events_source = events_file
            events += _read_events(replica, events_file, order)
    has_records = any(r.source for r in report.replicas)
    has_events = any(r.events_source for r in report.replicas)
    if not has_records and not has_events:
        report.status = "no_data"
        report.seconds = time.monotonic() - started
        return report
    lines = _merge(inst_id, entries, report)
    report.records = len(lines)
    half = cadence_seconds * 500
    report.close_pairs = sum(1 for a, b in itertools.pairwise(report.kept_ts) if b - a < half)
    report.events = len(events)
    written = False
    if has_records:
        data = b"".join(lines)
        existing = _existing(data_dir, inst_id, hour)
        if existing != data:
            if existing:
                lost = _timestamps(existing) - _timestamps(data)
                if lost:
                    raise ReplicaDataLost(
                        f"{target} holds {len(lost)} record(s) that no replica holds now (e.g. at {min(lost)}): a "
                        f"replica's file was removed or truncated since the last merge, or a collector wrote this "
                        f"hour into the lake itself. Restore the replica's file, or move the canonical hour's files "
                        f"away to merge only what the replicas hold")
            atomic_write(target, data)
            written = True
    if has_events:
        data = b"".join(line for *_, line in sorted(events))
        held = events_target.read_bytes() if events_target.is_file() else None
        if held != data:
            _refuse_to_shrink(events_target, held or b"", data)
            atomic_write(events_target, data)
            written = True
    report.status = "merged" if written else "unchanged"
    report.seconds = time.monotonic() - started
    return report

