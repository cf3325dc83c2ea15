"""The pipeline's Dagster instance at scale, on PostgreSQL: populate it with the events of N instruments × D
days of registered hours, then time the UI's GraphQL queries and the daemons' ticks against it.

    python -m bench.instance_scale [--instruments 250] [--days 30] [--groups 0] [--keep DIR]

--groups N models a deployment with `L2_INSTRUMENT_GROUPS=N` (`l2_pipeline.partitions`): partitions of
hour × instrument group, N × D × 24 of them instead of instruments × D × 24. The template is then the
~instruments/N members of one group (the group of BTC-USDT-SWAP among the instruments, each with files
of every template hour), registered through the same code paths with `L2_INSTRUMENT_GROUPS` set, so its
group-hour materializations and check evaluations carry each member's own metadata (`by_instrument`).
A cloned group-hour's events name its own group's members (`regroup`: each `by_instrument` entry is a
template member's, taken in turn, under a member's name, with `instruments` and `instrument_ids` to
match; the group's sums, the check descriptions and the runs' log messages stay the template group's),
so lake_health draws every instrument-hour from its own entry. Runs hold `partitions_per_run`
partitions (`GROUP_HOURS_PER_RUN` group-hours); an hour's backfill and `compress_job` tick have N partitions; the sensor
cursor, the new hour files and the heatmap are per instrument as before. --groups 0 (the default) is
the per-instrument model described below, unchanged.

What it does, in order (everything under a temporary directory, removed afterwards unless --keep; a
throwaway PostgreSQL server from `l2_pipeline_tests.postgres_server`, stopped at the end):

1. Template: a lake of one instrument (or one group's) × 3 closed hours (depth 10, 1,800 records an hour)
   is registered through the real code paths on a scratch database: `raw_hours_sensor` via the sensor
   daemon's `execute_sensor_iteration`, the backfill daemon, the run queue daemon and
   `DefaultRunLauncher` (a run process through the code server: `hour_tiers` = raw_hour + curated_parquet
   + book_features, the six hour checks and collector_freshness, hour figures off), then
   `compression_schedule` through the scheduler daemon (`launch_scheduled_runs`) and the queue (a
   `compress_job` run of `raw_archive`). Every row those writes left (event_logs, asset_check_executions,
   asset_event_tags, runs, run_tags, the backfill) is read back as the template.
2. Population (timed): D × 24 hours × N instruments ending with the hour before the last closed one, as a
   steady deployment makes them: each hour one sensor backfill (`PartitionBackfill` stored with
   `add_backfill`, completed) whose runs take ≤ `partitions_per_run` partitions of that hour (100
   instruments: runs of 100, 100 and 50 at N = 250; with --groups 5, runs of 2, 2 and 1 groups), the
   same for `compress_job` 6 hours later (so the last 6 hours are not archived), and
   collector_freshness's runless evaluation every 10 minutes. Each run's event log is the template run's,
   cloned from its serialized JSON: the per-run events once, each per-partition block (materialization
   planned, materialization, check evaluation) once per partition of the run, with run id, partition key,
   hour, date, instrument, paths, data version, timestamps and the check evaluations' target
   materialization (storage id) changed; the check-planned events carry the run's partitions. Rows are
   written with COPY: event_logs with ids drawn from its own sequence (so each evaluation can name its
   materialization, as the run does), asset_check_executions as the planned insert + evaluation update
   leave them, asset_event_tags as Dagster indexes them (data version, the two partition dimensions),
   runs and run_tags as `add_run` and the run-status events leave them. The `asset_keys` rows are then
   written by the storage's own `store_asset_event` for each asset's last materialization; the partition
   status caches (`asset_keys.cached_status_data`) are left empty, as after daemon writes: the first UI
   read builds them (timed apart as "cold"). Then ANALYZE, as autovacuum would.
3. Figures: rows and bytes per table (`pg_total_relation_size`, with indexes and TOAST) and per partition.
4. A real `dagster-webserver` on 127.0.0.1 (this worktree's code: `PYTHONPATH` is set and checked)
   against the instance and the code location (N instruments, partitions from the first populated hour;
   the lake holds only empty instrument and day directories). The GraphQL queries the UI of the
   installed dagster-webserver sends, extracted from its own source maps with their fragments, are
   POSTed as the browser does: each once cold, then 3 more times; the median of those 3 is reported. A
   query unanswered after 90 s is reported so, and the webserver restarted before the next one.
5. Daemons, in this process against the same instance (`MockedRunLauncher`: runs are recorded, not
   started): the sensor daemon's iteration (`execute_sensor_iteration`; each sensor's tick time from its
   stored tick) in steady state (raw_hours_sensor's cursor at the last registered hour, set as the UI's
   cursor mutation does) and after one new small hour file per instrument (the last closed hour), the
   backfill daemon's first iteration over that N-partition backfill (`execute_backfill_iteration`),
   lake_health_sensor's tick, and `lake_health_job` executed in process (the heatmap reads the 7-day
   window of N instruments from the instance).

Times are wall-clock (`time.perf_counter`) on a machine other work may share: `uptime` is printed
before and after.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.timing import Timing

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_INSTRUMENT = "BTC-USDT-SWAP"
TEMPLATE_HOURS = 3
TEMPLATE_RECORDS = 1800  # records of each instrument-hour of the template (a full hour at depth 10)
FRESHNESS_PER_HOUR = 6  # collector_freshness_sensor records a verdict at least every 10 minutes
REGISTRATION_RUN_SECONDS = 60.0  # simulated wall time of a full run (`partitions_per_run` partitions)
HEALTH_DAYS = 7
QUERY_REPEAT = 3
QUERY_TIMEOUT = 90.0  # a query still running then is reported as such, and the webserver restarted
MOCKED_LAUNCHER = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}
log = logging.getLogger("bench.instance_scale")


def scale_row(label: str, seconds: float, detail: str) -> Timing:
    """A row of this benchmark's report (its labels are longer than `bench.lake`'s)."""
    return Timing(label, seconds, detail, width=58)


def instrument_ids(n: int) -> list[str]:
    """`n` instrument ids: the five real ones first, then synthetic ones (as `bench.lake`)."""
    from bench.lake import instrument_ids as ids

    return ids(n)


def hour_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def partition(hour: datetime, inst_id: str) -> str:
    return f"{hour_key(hour)}|{inst_id}"


def lake_env(lake: Path, instruments: Sequence[str], start: datetime, groups: int = 0) -> dict[str, str]:
    """The `L2_*` settings of a code location over `lake` (hour figures off, as at hundreds of instruments;
    `groups` instrument groups, 0 for one partition per instrument)."""
    return {"L2_DATA_DIR": str(lake), "L2_INSTRUMENTS": ",".join(instruments), "L2_HOUR_FIGURES": "false",
            "L2_PARTITIONS_START": hour_key(start), "L2_HEALTH_DAYS": str(HEALTH_DAYS),
            "L2_INSTRUMENT_GROUPS": str(groups)}


def column(inst_id: str, groups: int) -> str:
    """The instrument dimension's key of `inst_id`: its group's key (`groups` > 0) or itself."""
    from l2_pipeline.partitions import group_key

    return group_key(inst_id, groups) if groups else inst_id


@contextmanager
def daemon_workspace(instance: Any) -> Iterator[Any]:
    """The daemons' workspace: this worktree's code location in a code server (it reads os.environ)."""
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget

    target = ModuleTarget(module_name="l2_pipeline.definitions", attribute="defs", working_directory=str(REPO),
                          location_name="l2_pipeline")
    with create_test_daemon_workspace_context(target, instance) as workspace:
        yield workspace


def wait_finished(instance: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        if runs and all(run.is_finished for run in runs):
            return
        time.sleep(0.5)
    raise TimeoutError("template runs did not finish")


# ---------------------------------------------------------------------------------------------- template


@dataclass
class Row:
    """One event_logs row of a template run."""

    id: int
    json: str
    event_type: str | None
    step_key: str | None
    asset_key: str | None
    column_partition: str | None  # event_logs.partition
    partition: str | None  # the event's partition (a check evaluation's is only in its JSON)
    check_name: str | None
    check_asset: str | None  # a check event's asset (event_logs.asset_key is empty for them)
    timestamp: float


@dataclass
class TemplateRun:
    run_id: str
    rows: list[Row]
    run_row: dict[str, Any]
    tags: list[tuple[str, str]]


@dataclass
class Template:
    partitions: list[str]  # the template hours' partition keys, in order
    members: list[str]  # the instruments of the template's partitions (one, or a group's members, sorted)
    lake: str
    registration: TemplateRun
    compress: TemplateRun
    freshness: Row  # a runless collector_freshness evaluation
    backfill: Any  # PartitionBackfill
    snapshots: list[tuple[Any, ...]]  # the job and execution plan snapshots the runs name


def write_hours(lake: Path, inst_id: str, hours: Sequence[datetime], records: int) -> None:
    from bench.synthetic_hours import instrument_records, write_hour

    templates = instrument_records(inst_id, 10)
    for hour in hours:
        write_hour(lake, inst_id, hour, templates, records)


def record_template(pg: Any, root: Path, last_closed: datetime, members: Sequence[str] = (TEMPLATE_INSTRUMENT,),
                    groups: int = 0) -> Template:
    """Register `members` × 3 hours through the daemons and read back every row they wrote: one
    instrument, or (`groups` > 0) the members of one instrument group, all in one group-hour a hour."""
    from dagster import DagsterEventType, EventLogEntry, instance_for_test
    from dagster._core.test_utils import freeze_time
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
    from dagster._daemon.sensor import execute_sensor_iteration
    from dagster._scheduler.scheduler import launch_scheduled_runs
    from dagster._serdes import deserialize_value

    lake = root / "template-lake"
    hours = [last_closed - timedelta(hours=h) for h in range(12, 12 - TEMPLATE_HOURS, -1)]
    members = sorted(members)
    if len({column(inst, groups) for inst in members}) != 1:
        raise ValueError(f"the template's instruments are not one partition's: {members}")
    for inst in members:
        write_hours(lake, inst, hours, TEMPLATE_RECORDS)
    os.environ.update(lake_env(lake, members, hours[0], groups))
    db = pg.create_database("template")
    home = root / "template-home"
    home.mkdir()
    queue = QueuedRunCoordinatorDaemon(interval_seconds=1)
    with instance_for_test(temp_dir=str(home), overrides=pg.dagster_storage(db)) as instance, \
            daemon_workspace(instance) as workspace:
        list(execute_sensor_iteration(workspace, log, None, None))
        list(execute_backfill_iteration(workspace, log))
        list(queue.run_iteration(workspace))
        wait_finished(instance)
        list(execute_backfill_iteration(workspace, log))  # the backfill completes
        iterations: dict = {}
        list(launch_scheduled_runs(workspace, log, datetime.now(UTC), iterations))
        tick_at = (last_closed + timedelta(hours=2)).replace(minute=15, second=30)
        with freeze_time(tick_at):
            list(launch_scheduled_runs(workspace, log, tick_at, iterations))
        list(queue.run_iteration(workspace))
        wait_finished(instance)
        runs = {run.job_name: run for run in instance.get_runs()}
        backfill = instance.get_backfills()[0]
    conn = pg.connect(db)
    try:
        cur = conn.cursor()
        cur.execute("SELECT id, run_id, event, dagster_event_type, step_key, asset_key, partition FROM event_logs "
                    "ORDER BY id")
        rows_by_run: dict[str, list[Row]] = {}
        for id_, run_id, text, event_type, step_key, asset_key, column_partition in cur.fetchall():
            entry = deserialize_value(text, EventLogEntry)
            data = entry.dagster_event.event_specific_data if entry.dagster_event else None
            check_name, check_asset, event_partition = None, None, column_partition
            if entry.dagster_event_type in (DagsterEventType.ASSET_CHECK_EVALUATION,
                                            DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED):
                check_name, check_asset = data.check_name, data.asset_key.to_string()
                event_partition = getattr(data, "partition", None)
            rows_by_run.setdefault(run_id, []).append(Row(id_, text, event_type, step_key, asset_key,
                                                          column_partition, event_partition, check_name,
                                                          check_asset, entry.timestamp))
        cur.execute("SELECT * FROM runs")
        names = [d[0] for d in cur.description]
        run_rows = {row["run_id"]: row for row in (dict(zip(names, r, strict=True)) for r in cur.fetchall())}
        cur.execute("SELECT run_id, key, value FROM run_tags ORDER BY id")
        tags: dict[str, list[tuple[str, str]]] = {}
        for run_id, key, value in cur.fetchall():
            tags.setdefault(run_id, []).append((key, value))
        cur.execute("SELECT snapshot_id, snapshot_body, snapshot_type FROM snapshots")
        snapshots = cur.fetchall()
    finally:
        conn.close()
    pg.drop_database(db)

    def template_run(run: Any) -> TemplateRun:
        return TemplateRun(run.run_id, rows_by_run[run.run_id], run_rows[run.run_id], tags[run.run_id])

    freshness = next(row for row in rows_by_run.get("", []) if row.check_name == "collector_freshness")
    return Template([partition(h, column(members[0], groups)) for h in hours], members, str(lake),
                    template_run(runs["__ASSET_JOB"]), template_run(runs["compress_job"]), freshness, backfill,
                    snapshots)


# -------------------------------------------------------------------------------------------- population


@dataclass
class Block:
    """Consecutive per-partition events of a template run: one representative row per kind, and whether
    the block goes kind by kind (all partitions of a kind, then the next kind) or partition by partition."""

    kinds: list[Row]
    kind_major: bool
    descending: bool


def split_blocks(rows: Sequence[Row]) -> list[Row | Block]:
    """The template run's events: per-run rows as they are, per-partition runs of rows as `Block`s."""
    out: list[Row | Block] = []
    i = 0
    while i < len(rows):
        if rows[i].partition is None:
            out.append(rows[i])
            i += 1
            continue
        j = i
        while j < len(rows) and rows[j].partition is not None:
            j += 1
        block = rows[i:j]
        seq = [((r.event_type, r.asset_key, r.check_name), r.partition) for r in block]
        kinds = list(dict.fromkeys(k for k, _ in seq))
        parts = list(dict.fromkeys(p for _, p in seq))
        if seq == [(k, p) for k in kinds for p in parts]:
            kind_major = True
        elif seq == [(k, p) for p in parts for k in kinds]:
            kind_major = False
        else:
            raise ValueError(f"unexpected event order in the template run: {seq}")
        reps = [next(r for r in block if (r.event_type, r.asset_key, r.check_name) == k) for k in kinds]
        out.append(Block(reps, kind_major, parts != sorted(parts)))
        i = j
    return out


def hour_of(key: str) -> datetime:
    return datetime.strptime(key.split("|")[0], "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)


def partition_subs(old: str, new: str) -> list[tuple[str, str]]:
    """String substitutions that turn the template partition `old`'s event into partition `new`'s."""
    if old == new:
        return []
    (old_hour, old_inst), (new_hour, new_inst) = (k.split("|") for k in (old, new))
    oh, nh = hour_of(old), hour_of(new)
    subs = [(old, new), (old_hour, new_hour), (oh.strftime("%Y-%m-%d"), nh.strftime("%Y-%m-%d")),
            (f"/{oh:%H}.jsonl", f"/{nh:%H}.jsonl"), (f'"{oh:%H}.jsonl:', f'"{nh:%H}.jsonl:'),
            (f"hour={oh.hour}/", f"hour={nh.hour}/"),
            (repr(oh.timestamp() + 1.0), repr(nh.timestamp() + 1.0)),
            (repr(oh.timestamp() + 3599.0), repr(nh.timestamp() + 3599.0)), (old_inst, new_inst)]
    return [(a, b) for a, b in subs if a != b]


def substitute(text: str, subs: Sequence[tuple[str, str]]) -> str:
    for old, new in subs:
        text = text.replace(old, new)
    return text


def regroup(text: str, old: Sequence[str], new: Sequence[str]) -> str:
    """A template event of a group-hour of the instruments `old` (sorted), made the event of a group-hour of
    `new` (sorted): each `by_instrument` entry (a materialization's or a check evaluation's metadata) is an
    old member's entry, taken in turn, under a new member's name and with the old instId in its values
    (paths, sources) replaced; `instruments` and `instrument_ids` follow. The group's other figures (sums,
    `failed_instruments`, a check's description) stay the template group's."""
    if list(old) == list(new):
        return text
    source = {inst: old[i % len(old)] for i, inst in enumerate(new)}

    def entry(name: str, data: dict[str, Any]) -> None:
        if name == "by_instrument" and isinstance(data.get("data"), dict):
            table = data["data"]
            data["data"] = {inst: json.loads(json.dumps(table[src]).replace(src, inst))
                            for inst, src in source.items() if src in table}
        elif name == "instrument_ids" and "text" in data:
            data["text"] = ", ".join(new)
        elif name == "instruments" and "value" in data:
            data["value"] = len(new)

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if isinstance(node.get("label"), str) and isinstance(node.get("entry_data"), dict):  # metadata_entries
                entry(node["label"], node["entry_data"])
            if isinstance(node.get("metadata"), dict):  # a check evaluation's metadata
                for name, value in node["metadata"].items():
                    if isinstance(value, dict):
                        entry(name, value)
            for value in node.values():
                walk(value)

    event = json.loads(text)
    walk(event)
    return json.dumps(event)


def copy_text(value: Any) -> str:
    """A value in PostgreSQL's COPY text format."""
    if value is None:
        return r"\N"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class Copier:
    """Rows buffered per table and written with COPY."""

    columns = {
        "event_logs": ("id", "run_id", "event", "dagster_event_type", "timestamp", "step_key", "asset_key",
                       "partition"),
        "asset_event_tags": ("event_id", "asset_key", "key", "value", "event_timestamp"),
        "asset_check_executions": ("asset_key", "check_name", "partition", "run_id", "execution_status",
                                   "evaluation_event", "evaluation_event_timestamp", "evaluation_event_storage_id",
                                   "materialization_event_storage_id", "create_timestamp"),
        "runs": ("run_id", "snapshot_id", "pipeline_name", "mode", "status", "run_body", "partition",
                 "partition_set", "create_timestamp", "update_timestamp", "start_time", "end_time", "backfill_id"),
        "run_tags": ("run_id", "key", "value"),
    }

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.buffers = {table: io.StringIO() for table in self.columns}
        self.pending = 0

    def add(self, table: str, *values: Any) -> None:
        self.buffers[table].write("\t".join(copy_text(v) for v in values) + "\n")
        self.pending += 1

    def flush(self) -> None:
        with self.conn.cursor() as cur:
            for table, buffer in self.buffers.items():
                buffer.seek(0)
                cur.copy_expert(f"COPY {table} ({', '.join(self.columns[table])}) FROM STDIN", buffer)
        self.conn.commit()
        self.buffers = {table: io.StringIO() for table in self.columns}
        self.pending = 0


def utc_naive(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


@dataclass
class Populator:
    """Writes cloned runs into the instance's database (see the module docstring, step 2)."""

    template: Template
    copier: Copier
    lake: str
    next_id: int
    per_run: int  # partitions of a full run (`partitions_per_run`)
    members: dict[str, list[str]] = field(default_factory=dict)  # group key → its instruments (groups only)
    last_materialization: dict[str, tuple[int, str]] = field(default_factory=dict)  # asset → (id, JSON)
    events: int = 0
    runs: int = 0
    blocks: dict[str, list[Row | Block]] = field(default_factory=dict)
    regrouped: dict[tuple[int, str], str] = field(default_factory=dict)  # (row id, group key) → its event

    def member_text(self, row: Row, key: str) -> str:
        """The template event `row` as partition `key`'s group's (`regroup`), or as it is without groups."""
        group = key.split("|")[1]
        if group not in self.members:
            return row.json
        if (row.id, group) not in self.regrouped:
            self.regrouped[row.id, group] = regroup(row.json, self.template.members, self.members[group])
        return self.regrouped[row.id, group]

    def run(self, template: TemplateRun, keys: list[str], start: float, run_id: str, run_subs: list[tuple[str, str]],
            backfill_id: str | None) -> None:
        """One run over `keys` (a partition range), its events spread over the run's simulated time."""
        blocks = self.blocks.setdefault(template.run_id, split_blocks(template.rows))
        subs = [(template.run_id, run_id), (self.template.lake, self.lake), *run_subs]
        n_events = sum(1 if isinstance(b, Row) else len(b.kinds) * len(keys) for b in blocks)
        step = REGISTRATION_RUN_SECONDS * len(keys) / self.per_run / n_events
        clock = [start]
        targets: dict[str, tuple[int, float]] = {}  # partition → its raw_hour materialization (id, timestamp)
        planned_at = start

        def emit(row: Row, text: str, key: str | None) -> None:
            id_ = self.next_id
            self.next_id += 1
            clock[0] += step
            ts = clock[0]
            text = text.replace(f'"timestamp": {row.timestamp!r}, "user_message"',
                                f'"timestamp": {ts!r}, "user_message"')
            target = targets.get(key) if key is not None else max(targets.values(), default=None)
            if row.event_type == "ASSET_CHECK_EVALUATION" and target is not None:
                target_id, target_ts = target
                text = re.sub(r'"storage_id": \d+, "timestamp": [0-9.e+]+\}',
                              f'"storage_id": {target_id}, "timestamp": {target_ts!r}}}', text, count=1)
            column_partition = key if row.column_partition is not None else None
            self.copier.add("event_logs", id_, run_id, text, row.event_type, utc_naive(ts), row.step_key,
                            row.asset_key, column_partition)
            self.events += 1
            if row.event_type == "ASSET_MATERIALIZATION" and key is not None:
                self.last_materialization[row.asset_key] = (id_, text)
                if row.asset_key == '["raw_hour"]':
                    targets[key] = (id_, ts)
                version = hashlib.sha256(f"{run_id}{key}{row.asset_key}".encode()).hexdigest()
                for tag, value in (("dagster/data_version", version), ("dagster/partition/hour", key.split("|")[0]),
                                   ("dagster/partition/instrument", key.split("|")[1])):
                    self.copier.add("asset_event_tags", id_, row.asset_key, tag, value, utc_naive(ts))
            if row.event_type == "ASSET_CHECK_EVALUATION":
                status = "SUCCEEDED" if '"success": true' in text else "FAILED"
                self.copier.add("asset_check_executions", row.check_asset, row.check_name, key, run_id, status, text,
                                utc_naive(ts), id_, target[0] if target else None, utc_naive(planned_at))

        old_set = '"__set__": ' + json.dumps(sorted(self.template.partitions))
        new_set = '"__set__": ' + json.dumps(sorted(keys))
        for block in blocks:
            if isinstance(block, Row):
                text = substitute(block.json, subs)
                if block.event_type == "ASSET_CHECK_EVALUATION_PLANNED":
                    text = text.replace(old_set, new_set)
                emit(block, text, None)
                continue
            ordered = sorted(keys, reverse=block.descending)
            pairs = ([(rep, key) for rep in block.kinds for key in ordered] if block.kind_major
                     else [(rep, key) for key in ordered for rep in block.kinds])
            for rep, key in pairs:
                text = substitute(self.member_text(rep, key), subs)
                emit(rep, substitute(text, partition_subs(rep.partition, key)), key)
        self.run_record(template, run_id, subs, start, clock[0], backfill_id)

    def run_record(self, template: TemplateRun, run_id: str, subs: list[tuple[str, str]], start: float, end: float,
                   backfill_id: str | None) -> None:
        row = template.run_row
        created = start - 2.0
        self.copier.add("runs", run_id, row["snapshot_id"], row["pipeline_name"], row["mode"], row["status"],
                        substitute(row["run_body"], subs), row["partition"], row["partition_set"], utc_naive(created),
                        utc_naive(end), start, end, backfill_id)
        for key, value in template.tags:
            self.copier.add("run_tags", run_id, key, substitute(value, subs))
        self.runs += 1

    def freshness(self, ts: float) -> None:
        row = self.template.freshness
        text = row.json.replace(f'"timestamp": {row.timestamp!r}', f'"timestamp": {ts!r}')
        id_ = self.next_id
        self.next_id += 1
        self.copier.add("event_logs", id_, "", text, row.event_type, utc_naive(ts), row.step_key, row.asset_key, None)
        status = "SUCCEEDED" if '"success": true' in text else "FAILED"
        self.copier.add("asset_check_executions", row.check_asset, row.check_name, None, "", status, text,
                        utc_naive(ts), id_, None, utc_naive(ts))
        self.events += 1


def range_subs(template: TemplateRun, keys: list[str]) -> list[tuple[str, str]]:
    """Run-level substitutions: the template run's range and hour count → this run's."""
    tags = dict(template.tags)
    subs = [(tags["l2/first"], keys[0]), (tags["l2/last"], keys[-1])]
    for tag in ("l2/hours", "l2/backfill_hours"):
        if tag in tags:
            subs.append((f'"{tag}": "{tags[tag]}"', f'"{tag}": "{len(keys)}"'))
    return subs


def backfill_for(template: Any, backfill_id: str, keys: list[str], partitions_def: Any, at: float) -> Any:
    """The sensor's completed backfill of one hour's `keys` (raw_hour, curated_parquet, book_features)."""
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.definitions.timestamp import TimestampWithTimezone

    data = template.asset_backfill_data
    subset = AssetGraphSubset(partitions_subsets_by_asset_key={
        asset: partitions_def.subset_with_partition_keys(keys)
        for asset in data.target_subset.partitions_subsets_by_asset_key})
    data = data._replace(target_subset=subset, materialized_subset=subset, requested_subset=subset,
                         backfill_start_time=TimestampWithTimezone(at, "UTC"))
    tags = {**template.tags, "l2/backfill_first": keys[0], "l2/backfill_last": keys[-1],
            "l2/backfill_hours": str(len(keys))}
    return template._replace(backfill_id=backfill_id, tags=tags, backfill_timestamp=at, asset_backfill_data=data,
                             serialized_asset_backfill_data=None, backfill_end_timestamp=at + 90.0)


def populate(instance: Any, conn: Any, template: Template, instruments: list[str], hours: list[datetime],
             lake: Path, partitions_def: Any) -> Populator:
    """Write the runs, events and backfills of the partitions of `hours` × `instruments` (or of their
    groups, as `partitions_def` says; see the module docstring)."""
    from l2_pipeline.assets.lake import partitions_per_run
    from l2_pipeline.partitions import group_members, instrument_groups, instrument_keys

    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM event_logs")
        first_id = cur.fetchone()[0] + 1
        cur.executemany("INSERT INTO snapshots (snapshot_id, snapshot_body, snapshot_type) VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING", template.snapshots)
    per_run = partitions_per_run(partitions_def)
    grouped = bool(instrument_groups(partitions_def))
    columns = instrument_keys(partitions_def) if grouped else instruments
    members = {group: group_members(group, instruments) for group in columns} if grouped else {}
    populator = Populator(template, Copier(conn), str(lake), first_id, per_run, members)
    chunks = [columns[i:i + per_run] for i in range(0, len(columns), per_run)]
    backfills = []
    compress_after = 6
    for n, hour in enumerate(hours):
        end = (hour + timedelta(hours=1)).timestamp()
        backfill_id = uuid.uuid4().hex[:8]
        keys = [partition(hour, name) for name in columns]
        backfills.append(backfill_for(template.backfill, backfill_id, keys, partitions_def, end + 150.0))
        start = end + 180.0
        for chunk in chunks:
            run_keys = [partition(hour, name) for name in chunk]
            subs = [(template.backfill.backfill_id, backfill_id), *range_subs(template.registration, run_keys)]
            populator.run(template.registration, run_keys, start, str(uuid.uuid4()), subs, backfill_id)
            start += REGISTRATION_RUN_SECONDS * len(chunk) / per_run
        for i in range(FRESHNESS_PER_HOUR):
            populator.freshness(end + 600.0 * i + 30.0)
        if n >= compress_after:
            archived = hours[n - compress_after]
            tick = (hour + timedelta(hours=1)).replace(minute=15)
            start = tick.timestamp() + 20.0
            for chunk in chunks:
                run_keys = [partition(archived, name) for name in chunk]
                subs = [*range_subs(template.compress, run_keys),
                        (template.compress.run_row["run_body"].split('scheduled_execution_time": "')[1][:19],
                         tick.strftime("%Y-%m-%dT%H:%M:%S"))]
                populator.run(template.compress, run_keys, start, str(uuid.uuid4()), subs, None)
                start += REGISTRATION_RUN_SECONDS * len(chunk) / per_run / 4
        if populator.copier.pending > 200_000:
            populator.copier.flush()
    populator.copier.flush()
    with conn.cursor() as cur:
        cur.execute("SELECT setval(pg_get_serial_sequence('event_logs', 'id'), %s)", (populator.next_id - 1,))
    conn.commit()
    storage = instance.event_log_storage
    from dagster import EventLogEntry
    from dagster._serdes import deserialize_value

    for id_, text in sorted(populator.last_materialization.values()):
        storage.store_asset_event(deserialize_value(text, EventLogEntry), id_)
    for backfill in backfills:
        instance.add_backfill(backfill)
    with conn.cursor() as cur:
        cur.execute("ANALYZE")
    conn.commit()
    return populator


def table_sizes(conn: Any) -> list[tuple[str, int, int]]:
    """(table, rows, bytes with indexes and TOAST) of every table, largest first."""
    with conn.cursor() as cur:
        cur.execute("SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables ORDER BY 2 DESC")
        sizes = cur.fetchall()
        out = []
        for table, size in sizes:
            cur.execute(f'SELECT count(*) FROM "{table}"')
            out.append((table, cur.fetchone()[0], size))
    return out


# ---------------------------------------------------------------------------------------------- the UI


def ui_queries() -> dict[str, str]:
    """operation name → the query text the installed dagster-webserver's UI sends (its `gql` documents and
    the fragments they interpolate, from the source maps shipped with the webapp)."""
    import dagster_webserver

    build = Path(dagster_webserver.__file__).parent / "webapp" / "build"
    consts: dict[str, str] = {}
    pattern = re.compile(r"(?:export )?const (\w+)\s*=\s*(?:gql|graphql\()\s*`(.*?)`", re.S)
    for path in glob.glob(str(build / "**" / "*.js.map"), recursive=True):
        try:
            sources = json.loads(Path(path).read_text()).get("sourcesContent") or []
        except (OSError, ValueError):
            continue
        for source in sources:
            if source and "gql`" in source:
                for name, body in pattern.findall(source):
                    consts.setdefault(name, body)

    def resolve(name: str, seen: set[str]) -> list[str]:
        if name in seen or name not in consts:
            return []
        seen.add(name)
        body = consts[name]
        parts = [re.sub(r"\$\{\w+\}", "", body)]
        for ref in re.findall(r"\$\{(\w+)\}", body):
            parts += resolve(ref, seen)
        return parts

    out = {}
    for name, body in consts.items():
        match = re.search(r"\bquery (\w+)", body)
        if match and match.group(1) not in out:
            out[match.group(1)] = "\n".join(resolve(name, set()))
    return out


RUNS_OR_ERROR = """query RunsOrErrorFirstPage($limit: Int) {
  runsOrError(limit: $limit) {
    ... on Runs { results { id runId status jobName startTime endTime updateTime creationTime
      tags { key value } assetSelection { path } } }
    ... on PythonError { message }
  }
}"""


def page_queries(n_checks_key: str = "coverage") -> list[tuple[str, str, dict[str, Any]]]:
    """(page, operation, variables) of each query timed."""
    raw, health = {"path": ["raw_hour"]}, {"path": ["lake_health"]}
    events = {"eventTypeSelectors": ["MATERIALIZATION", "OBSERVATION", "FAILED_TO_MATERIALIZE"], "limit": 100}
    return [
        ("raw_hour page", "AssetViewDefinitionQuery", {"assetKey": raw}),
        ("raw_hour page", "AssetOverviewMetadataEventsQuery", {"assetKey": raw}),
        ("raw_hour Partitions tab", "PartitionHealthQuery", {"assetKey": raw}),
        ("raw_hour Events tab", "RecentAssetEventsQuery", {"assetKey": raw, **events}),
        ("lake_health page", "AssetViewDefinitionQuery", {"assetKey": health}),
        ("lake_health page", "AssetGraphLiveQuery", {"assetKeys": [health]}),
        ("lake_health page", "RecentAssetEventsQuery", {"assetKey": health, **events}),
        ("Runs page", "RunsFeedRootQuery", {"limit": 30, "view": "ROOTS", "filter": {}}),
        ("Runs page", "RunsOrErrorFirstPage", {"limit": 30}),
        # these read the hour checks' partition statuses (AssetCheckState, rebuilt from every check row)
        ("raw_hour page", "AssetChecksQuery", {"assetKey": raw}),
        ("raw_hour page", "AssetGraphLiveQuery", {"assetKeys": [raw]}),
        (f"check {n_checks_key} Partitions tab", "AssetCheckPartitionHealthQuery",
         {"assetKey": raw, "checkName": n_checks_key}),
    ]


def post(url: str, query: str, operation: str, variables: dict[str, Any], save: Path | None = None
         ) -> tuple[float, int, str | None]:
    """(seconds, response bytes, first GraphQL error) of one POST to /graphql; the response written to `save`."""
    body = json.dumps({"query": query, "operationName": operation or None, "variables": variables}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=QUERY_TIMEOUT) as response:
        data = response.read()
    seconds = time.perf_counter() - started
    if save is not None:
        save.write_bytes(data)
    errors = json.loads(data).get("errors")
    return seconds, len(data), str(errors[0].get("message"))[:200] if errors else None


@dataclass
class QueryTiming:
    page: str
    operation: str
    cold: float
    median: float
    runs: list[float]
    size: int
    error: str | None


@contextmanager
def webserver(home: Path, env: dict[str, str], root: Path) -> Iterator[str]:
    """A dagster-webserver process on 127.0.0.1 over this worktree's workspace.yaml; yields its /graphql URL."""
    from l2_pipeline_tests.postgres_server import free_port

    port = free_port()
    exe = Path(sys.executable).parent / "dagster-webserver"
    out = open(root / "webserver.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], cwd=REPO,
                            env={**os.environ, **env, "DAGSTER_HOME": str(home)}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if post(url, "{version}", "", {})[2] is None:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            raise TimeoutError(f"dagster-webserver did not answer; see {root / 'webserver.log'}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a worker thread still computing a query that timed out
            proc.kill()
            proc.wait()
        out.close()


def time_queries(start: Callable[[ExitStack], str], responses: Path) -> list[QueryTiming]:
    """Each page's queries, cold then `QUERY_REPEAT` times, against the webserver `start` starts; the cold
    responses are kept in `responses`. A query that has not answered within `QUERY_TIMEOUT` is reported so
    and the webserver restarted (its worker would go on computing and slow every later query)."""
    queries = {**ui_queries(), "RunsOrErrorFirstPage": RUNS_OR_ERROR}
    responses.mkdir(exist_ok=True)
    out = []
    stack = ExitStack()
    url = start(stack)
    try:
        for i, (page, operation, variables) in enumerate(page_queries()):
            try:
                cold, size, error = post(url, queries[operation], operation, variables,
                                         responses / f"{i:02d}-{operation}.json")
                runs = [post(url, queries[operation], operation, variables)[0] for _ in range(QUERY_REPEAT)]
            except (TimeoutError, OSError) as exc:
                print(f"  {page:<28} {operation:<34} no answer within {QUERY_TIMEOUT:.0f} s ({exc}); restarting "
                      "the webserver", flush=True)
                out.append(QueryTiming(page, operation, float("inf"), float("inf"), [], 0, "timeout"))
                stack.close()
                stack = ExitStack()
                url = start(stack)
                continue
            out.append(QueryTiming(page, operation, cold, statistics.median(runs), runs, size, error))
            print(f"  {page:<28} {operation:<34} cold {cold:7.2f} s  median {statistics.median(runs):7.2f} s  "
                  f"({size / 1e3:.0f} kB){'  ERROR ' + error if error else ''}", flush=True)
    finally:
        stack.close()
    return out


# ------------------------------------------------------------------------------------------- the daemons


def set_sensor_cursor(workspace: Any, instance: Any, name: str, cursor: str) -> None:
    """Set a sensor's cursor as the UI's mutation does (dagster_graphql `set_sensor_cursor`)."""
    from dagster._core.scheduler.instigation import SensorInstigatorData

    sensor = remote_sensor(workspace, name)
    stored = instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
    state = sensor.get_current_instigator_state(stored)
    data = state.instigator_data
    updated = state.with_data(SensorInstigatorData(
        last_tick_timestamp=data.last_tick_timestamp if data else None,
        last_run_key=data.last_run_key if data else None, min_interval=sensor.min_interval_seconds, cursor=cursor,
        sensor_type=sensor.sensor_type))
    if stored is None:
        instance.add_instigator_state(updated)
    else:
        instance.update_instigator_state(updated)


def remote_sensor(workspace: Any, name: str) -> Any:
    context = workspace.create_request_context()
    return context.get_code_location("l2_pipeline").get_repository("__repository__").get_sensor(name)


def last_tick(workspace: Any, instance: Any, name: str) -> str:
    """What the last tick of sensor `name` did."""
    sensor = remote_sensor(workspace, name)
    tick = instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id, limit=1)[0]
    what = f"{tick.status.value}, {len(tick.run_ids)} run(s)"
    return what + (f": {tick.tick_data.skip_reason[:100]}" if tick.tick_data.skip_reason else "")


SENSORS = ("raw_hours_sensor", "lake_health_sensor", "collector_freshness_sensor")


def run_only(workspace: Any, instance: Any, name: str) -> None:
    """Leave sensor `name` the only one running, so that a daemon iteration is exactly its tick."""
    for other in SENSORS:
        sensor = remote_sensor(workspace, other)
        state = instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
        running = sensor.get_current_instigator_state(state).is_running
        if other == name and not running:
            instance.start_sensor(sensor)
        elif other != name and running:
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)


def measure_daemons(instance: Any, lake: Path, instruments: list[str], last_registered: datetime) -> list[Timing]:
    """The sensors' ticks and the backfill daemon's iteration (see the module docstring, step 5)."""
    from dagster._core.test_utils import freeze_time
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster._daemon.sensor import execute_sensor_iteration

    from bench.synthetic_hours import instrument_records, write_hour
    from bench.timing import timed
    from l2_lake.format.hours import iso

    out: list[Timing] = []
    with daemon_workspace(instance) as workspace:
        clock = [datetime.now(UTC)]

        def tick(name: str, label: str, repeat: int = 1) -> None:
            """`repeat` daemon iterations with only sensor `name` running: the median time, the last tick."""
            run_only(workspace, instance, name)
            times = []
            for _ in range(repeat):
                clock[0] += timedelta(minutes=2)  # past the sensor's minimum interval
                with freeze_time(clock[0]):
                    times.append(timed(lambda: list(execute_sensor_iteration(workspace, log, None, None)))[1])
            what = last_tick(workspace, instance, name)
            detail = what + (f" (median of {repeat})" if repeat > 1 else "")
            out.append(scale_row(label, statistics.median(times), detail))
            print(out[-1], flush=True)

        tick("raw_hours_sensor", "raw_hours_sensor, first tick (empty cursor, empty day dirs)")
        # a steady deployment's cursor: every instrument's last registered hour (as the UI's cursor mutation sets it)
        cursor = json.dumps({"v": 1, "last": {inst: iso(last_registered) for inst in sorted(instruments)}})
        set_sensor_cursor(workspace, instance, "raw_hours_sensor", cursor)
        tick("raw_hours_sensor", "raw_hours_sensor, steady (nothing new)", QUERY_REPEAT)
        new_hour = last_registered + timedelta(hours=1)
        for inst in instruments:
            write_hour(lake, inst, new_hour, instrument_records(inst, 5, 2), 60)
        tick("raw_hours_sensor", "raw_hours_sensor, 1 new hour per instrument")
        requested = [b for b in instance.get_backfills() if b.status.value == "REQUESTED"]
        n = sum(b.asset_backfill_data.target_subset.num_partitions_and_non_partitioned_assets for b in requested)
        before = len(instance.get_runs())
        _, secs = timed(lambda: list(execute_backfill_iteration(workspace, log)))
        submitted = len(instance.get_runs()) - before
        out.append(scale_row("backfill daemon, first iteration over that backfill", secs,
                          f"{n} asset partitions; {submitted} run(s) submitted (mocked launcher)"))
        print(out[-1], flush=True)
        # the same again, profiled: the cursor set back one hour, the sensor requests the same hour again
        set_sensor_cursor(workspace, instance, "raw_hours_sensor", cursor)
        tick("raw_hours_sensor", "raw_hours_sensor, the same hour again (cursor set back)")
        print("  where the backfill daemon's iteration spends its time (cProfile, cumulative; the profiler slows it):")
        for line in profile_top(lambda: list(execute_backfill_iteration(workspace, log))):
            print("    " + line, flush=True)
        set_sensor_cursor(workspace, instance, "lake_health_sensor", "")
        tick("lake_health_sensor", "lake_health_sensor, new raw_hour materializations")
        tick("lake_health_sensor", "lake_health_sensor, steady", QUERY_REPEAT)
        tick("collector_freshness_sensor", "collector_freshness_sensor", QUERY_REPEAT)
    return out


def lake_health_run(instance: Any, lake: Path, instruments: list[str], start: datetime, groups: int = 0
                    ) -> list[Timing]:
    """`lake_health_job` executed in this process against the instance (the 7-day heatmap; its cells' counts
    by status), then the same reads done by hand, the materializations fetched in batches of Dagster's
    limit, and the figure drawn (each cell from its instrument's own metadata, `member_metadata`)."""
    from dagster import AssetRecordsFilter, DagsterEventType

    from bench.timing import timed
    from l2_lake.format.hours import now_utc
    from l2_lake.pictures.plots import lake_health_figure
    from l2_pipeline.assets.dashboards import health_cell, window
    from l2_pipeline.definitions import build_definitions
    from l2_pipeline.group_hours import member_metadata
    from l2_pipeline.keys import LAKE_HEALTH, RAW_HOUR
    from l2_pipeline.partitions import partition_key
    from l2_pipeline.resources import LakeResource

    resource = LakeResource(data_dir=str(lake), instruments=instruments, hour_figures=False, health_days=HEALTH_DAYS,
                            partitions_start=hour_key(start), instrument_groups=groups)
    job = build_definitions(resource).resolve_job_def("lake_health_job")
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    result, secs = timed(lambda: job.execute_in_process(instance=instance, run_config=quiet, raise_on_error=False))
    failure = next((e.event_specific_data.error.message.strip()[:160] for e in result.all_events
                    if e.is_step_failure), "")
    cells = len(instruments) * HEALTH_DAYS * 24
    drawn = result.asset_materializations_for_node(LAKE_HEALTH.path[-1]) if result.success else []
    counts = ", ".join(f"{status} {drawn[0].metadata[status].value:,}" for status in ("passed", "warning", "failed",
                                                                                     "missing") if drawn)
    out = [scale_row("lake_health_job, in process", secs, f"{HEALTH_DAYS} days × {len(instruments)} instruments = "
                  f"{cells:,} cells: " + (f"success ({counts})" if result.success else f"FAILED: {failure}"))]
    hours = window(now_utc(), HEALTH_DAYS)
    keys = {(inst, hour): str(partition_key(inst, hour, groups)) for inst in instruments for hour in hours}
    ids, secs = timed(lambda: instance.event_log_storage.get_latest_storage_id_by_partition(
        RAW_HOUR, DagsterEventType.ASSET_MATERIALIZATION, set(keys.values())))
    out.append(scale_row("  its read 1: latest storage id of each partition", secs,
                         f"{len(ids):,} ids, one query"))
    batch = 10_000  # the most fetch_materializations returns at once

    def fetch() -> dict[int, Any]:
        wanted = sorted(ids.values())
        records = {}
        for i in range(0, len(wanted), batch):
            chunk = wanted[i:i + batch]
            found = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=RAW_HOUR, storage_ids=chunk), limit=len(chunk)).records
            records.update((record.storage_id, record) for record in found)
        return records

    records, secs = timed(fetch)
    out.append(scale_row("  its read 2: those materializations, ≤ 10,000 a query", secs,
                      f"{len(records):,} records in {-(-len(ids) // batch)} queries"))
    by_key = {key: records[i] for key, i in ids.items() if i in records}

    def draw() -> bytes:
        cells = []
        for (inst, hour), key in keys.items():
            record = by_key.get(key)
            materialization = record.asset_materialization if record else None
            member = member_metadata(materialization.metadata, inst) if materialization else None
            cells.append(health_cell(inst, hour, member))
        return lake_health_figure(cells, instruments, hours)

    png, secs = timed(draw)
    out.append(scale_row("  its figure: cells from metadata + PNG", secs, f"{len(png) / 1e3:.0f} kB"))
    return out


def profile_top(fn: Any, n: int = 12) -> list[str]:
    """Run `fn` under cProfile; the `n` functions of Dagster and the code location with most cumulative time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler)
    rows = []
    for (file, line, name), (_, calls, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "dagster" in file or "l2_" in file:
            short = file.split("site-packages/")[-1]
            rows.append((cumulative, f"{cumulative:7.2f} s  {calls:>9,} calls  {short}:{line} {name}"))
    return [text for _, text in sorted(rows, reverse=True)[:n]]


# ------------------------------------------------------------------------------------------------- main


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def bench(n_instruments: int, days: int, root: Path, groups: int = 0) -> None:
    """Steps 1 to 5 of the module docstring for `n_instruments` × `days`, in `groups` instrument groups
    (0: one partition per instrument-hour)."""
    from dagster import instance_for_test

    from l2_lake.format import layout
    from l2_pipeline.partitions import group_members, instrument_keys, lake_partitions
    from l2_pipeline_tests.postgres_server import find_bin_dir, run_as_prefix, running_postgres

    print(f"before: {uptime()}", flush=True)
    now = datetime.now(UTC)
    last_closed = layout.hour_floor(int((now - timedelta(minutes=3)).timestamp() * 1000)) - layout.HOUR
    last_registered = last_closed - layout.HOUR  # the last closed hour is the "new hour" of the sensor tick
    hours = [last_registered - layout.HOUR * i for i in range(days * 24 - 1, -1, -1)]
    instruments = instrument_ids(n_instruments)
    partitions_def = lake_partitions(hours[0], instruments, groups)
    columns = instrument_keys(partitions_def)  # instruments, or group keys
    template_members = (group_members(column(TEMPLATE_INSTRUMENT, groups), instruments) if groups
                        else [TEMPLATE_INSTRUMENT])
    lake = root / "lake"
    for inst in instruments:  # empty instrument and day directories: the UI reads only the instance
        for day in {hours[-1].date(), last_closed.date()}:
            (layout.records_path(lake, inst, datetime.combine(day, datetime.min.time(), UTC))).parent.mkdir(
                parents=True, exist_ok=True)
    with running_postgres(find_bin_dir(), run_as_prefix()) as pg:
        print(f"PostgreSQL: {pg.version}", flush=True)
        from bench.timing import timed

        template, secs = timed(lambda: record_template(pg, root, last_closed, template_members, groups))
        what = f"{len(template_members)} instruments of {column(TEMPLATE_INSTRUMENT, groups)}" if groups else \
            "1 instrument"
        print(f"template: {what} × {TEMPLATE_HOURS} hours registered and archived through the daemons "
              f"in {secs:.1f} s ({len(template.registration.rows)} + {len(template.compress.rows)} events)", flush=True)
        env = lake_env(lake, instruments, hours[0], groups)
        os.environ.update(env)
        db = pg.create_database("scale")
        home = root / "home"
        home.mkdir()
        with instance_for_test(temp_dir=str(home),
                               overrides={**pg.dagster_storage(db), "run_launcher": MOCKED_LAUNCHER}) as instance:
            conn = pg.connect(db, user="dagster")
            conn.autocommit = False
            populator, secs = timed(lambda: populate(instance, conn, template, instruments, hours, lake,
                                                     partitions_def))
            n_partitions = len(hours) * len(columns)
            grouping = f" in {groups} groups" if groups else ""
            print(f"\npopulated {len(instruments)} instruments{grouping} × {days} days = {n_partitions:,} partitions "
                  f"in {secs:.0f} s: {populator.events:,} events, {populator.runs:,} runs, {len(hours)} backfills "
                  f"({populator.events / secs:,.0f} events/s)", flush=True)
            conn.autocommit = True
            from dagster import AssetKey

            stored = {asset: len(instance.get_materialized_partitions(AssetKey(asset)))
                      for asset in ("raw_hour", "curated_parquet", "book_features", "raw_archive")}
            print(f"materialized partitions read back: {stored}", flush=True)
            sizes = table_sizes(conn)
            total = sum(size for _, _, size in sizes)
            print(f"\ntables (pg_total_relation_size, with indexes and TOAST): {total / 1e9:.2f} GB, "
                  f"{total / n_partitions / 1e3:.1f} kB per partition")
            for table, rows, size in sizes[:10]:
                print(f"  {table:<28} {rows:>12,} rows {size / 1e6:>10.1f} MB  {rows / n_partitions:6.2f} rows and "
                      f"{size / n_partitions / 1e3:5.1f} kB per partition")
            print(f"\nGraphQL through dagster-webserver (cold, then median of {QUERY_REPEAT}):", flush=True)
            check_code = subprocess.run([sys.executable, "-c", "import l2_pipeline; print(l2_pipeline.__file__)"],
                                        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                                        check=True).stdout.strip()
            print(f"  code location imports {check_code}")
            time_queries(lambda stack: stack.enter_context(webserver(home, env, root)), root / "responses")
            print("\ndaemons (each sensor alone in the sensor daemon's iteration) and lake_health:", flush=True)
            measure_daemons(instance, lake, instruments, last_registered)
            for timing in lake_health_run(instance, lake, instruments, hours[0], groups):
                print(timing, flush=True)
            conn.close()
    print(f"after: {uptime()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instance_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", type=int, default=250)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--groups", type=int, default=0,
                        help="partition by hour × this many instrument groups (L2_INSTRUMENT_GROUPS); 0: by instrument")
    parser.add_argument("--keep", type=Path, help="work here and keep the lake, logs and Dagster home")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = args.keep or Path(tempfile.mkdtemp(prefix="l2-instance-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        bench(args.instruments, args.days, root, args.groups)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
