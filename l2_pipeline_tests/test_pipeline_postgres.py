"""Dagster on a real PostgreSQL server, configured by `deploy/dagster.yaml`.

The server is the session's throwaway PostgreSQL (`postgres_server`, l2_pipeline_tests/postgres_server.py);
each instance gets a database of its own. An instance is `deploy/dagster.yaml` copied as it is into
a fresh `DAGSTER_HOME` and loaded with `DagsterInstance.from_config`, the way `dagster-webserver` and
`dagster-daemon` load it, with the `DAGSTER_PG_*` variables pointing at that database. So the
storage is PostgreSQL, the run coordinator queues runs and the default run launcher starts each
run as a process of the code server.

The flows are the SQLite tests' (test_pipeline_backfills.py, test_pipeline_reregistration.py),
through the daemons' own code: the sensor daemon (`execute_sensor_iteration`) ticks
`raw_hours_sensor` of the code location and submits its backfill; the backfill daemon
(`execute_backfill_iteration`) turns it into runs, which the run queue daemon
(`QueuedRunCoordinatorDaemon`) launches; the cursor is reset with the UI's GraphQL mutation.

- registration: a planted lake with one damaged hour, registered by one sensor tick and one
  backfill; every raw_hour partition is materialized and its checks are current, the damaged hour
  FAILED on `no_crossed_books`. The same flow also runs on an instance configured by the same file
  without its `storage` section (SQLite in DAGSTER_HOME); both wall times and their ratio are
  printed (`pytest -s`).
- cursor reset: with the code location served by `dagster api grpc` and loaded through
  `deploy/workspace.grpc.yaml` (docs/PIPELINE.md's several-hosts layout, on one host), a UI cursor reset
  makes the next tick request only the hour whose file changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.instance_for_test import cleanup_test_instance
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._core.workspace.load_target import WorkspaceFileTarget, WorkspaceLoadTarget
from dagster._daemon.controller import create_daemon_grpc_server_registry
from dagster._grpc.client import DagsterGrpcClient
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from l2_lake.quality.verdicts import HOUR_CHECKS, NO_CROSSED_BOOKS
from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.damaged_lake import plant_damaged_hour
from l2_pipeline_tests.instances import LOCATION, code_location
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    NO_FIGURES,
    append_record,
    backfill_partitions,
    backfill_runs,
    check_status,
    lake_resource,
    latest_raw_hour,
    parquet_tiers,
    plant_good_hour,
    reset_sensor_cursor,
    run_backfill,
    sensor_daemon_tick,
)
from l2_pipeline_tests.postgres_server import PostgresServer, free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY_CONFIG = REPO / "deploy" / "dagster.yaml"
GRPC_WORKSPACE = REPO / "deploy" / "workspace.grpc.yaml"
MAX_CONCURRENT_RUNS = 4  # deploy/dagster.yaml
HOURS = 3  # planted per instrument in the registration flow
RECORDS = 20  # per planted hour (L2_COVERAGE_THRESHOLD_PCT=0: short hours pass coverage)
DAMAGED = (ETH, 1)  # one crossed book: fails no_crossed_books only
CODE_SERVER_START_SECONDS = 60


def key(inst_id: str, offset: int) -> str:
    return str(partition_key(inst_id, BASE_HOUR + timedelta(hours=offset)))


def deploy_home(home: Path, *, sqlite: bool = False) -> Path:
    """A new DAGSTER_HOME holding deploy/dagster.yaml as it is, or (`sqlite`) without its `storage`
    section, so that Dagster keeps its storage in SQLite files in the home and all else is the same."""
    home.mkdir(parents=True)
    if sqlite:
        config = yaml.safe_load(DEPLOY_CONFIG.read_text())
        del config["storage"]
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    else:
        shutil.copy(DEPLOY_CONFIG, home / "dagster.yaml")
    return home


@contextmanager
def deploy_instance(home: Path, monkeypatch, server: PostgresServer | None) -> Iterator[DagsterInstance]:
    """The instance of deploy/dagster.yaml in `home`: on a new database of `server`, or (None) on
    SQLite. The variables are set before anything loads it: code servers and run processes started
    from here inherit them."""
    deploy_home(home, sqlite=server is None)
    env = {"DAGSTER_HOME": str(home)}
    if server is not None:
        env |= server.dagster_env(server.create_database("l2"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)) as instance:
        try:
            yield instance
        finally:
            cleanup_test_instance(instance)  # waits for runs the launcher started, if any is left


@contextmanager
def daemon_workspace(instance: DagsterInstance, target: WorkspaceLoadTarget) -> Iterator[WorkspaceProcessContext]:
    """The workspace the daemons (and the webserver's GraphQL) evaluate the code location in, built
    as `dagster-daemon` builds it (like `create_test_daemon_workspace_context`), which on exit also
    waits until the code servers it started have exited: one still shutting down when the session's
    PostgreSQL stops hangs on its lost connection, outliving pytest."""
    with create_daemon_grpc_server_registry(instance) as registry, \
            WorkspaceProcessContext(instance, target, grpc_server_registry=registry) as workspace:
        entry = workspace.create_request_context().get_code_location_entries()[LOCATION]
        assert entry.code_location is not None, entry.load_error
        yield workspace
    registry.wait_for_processes()


def set_lake_env(monkeypatch, lake_dir: Path, instruments: str) -> None:
    """The code location's settings (read by code servers and run processes started afterwards)."""
    for name, value in {"L2_DATA_DIR": str(lake_dir), "L2_INSTRUMENTS": instruments, **NO_FIGURES,
                        "L2_COVERAGE_THRESHOLD_PCT": "0"}.items():
        monkeypatch.setenv(name, value)


@contextmanager
def grpc_code_server(log: Path) -> Iterator[int]:
    """`dagster api grpc -m l2_pipeline.definitions` (docs/PIPELINE.md's code-host command, on 127.0.0.1
    and a free port) with this process's environment; yields its port, terminates it on exit."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dagster", "api", "grpc", "-m", "l2_pipeline.definitions",
                                 "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + CODE_SERVER_START_SECONDS
        while True:
            assert proc.poll() is None, f"the code server exited {proc.returncode}:\n{log.read_text()}"
            try:
                client.ping("")
                break
            except Exception:
                assert time.monotonic() < deadline, f"the code server did not answer:\n{log.read_text()}"
                time.sleep(0.25)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def plant_registration_lake(lake_dir: Path) -> tuple[set[str], str]:
    """HOURS good hours of BTC and ETH, one of them (DAMAGED) with a crossed book; returns every
    partition and the damaged one."""
    for inst_id in (BTC, ETH):
        for offset in range(HOURS):
            hour = BASE_HOUR + timedelta(hours=offset)
            if (inst_id, offset) == DAMAGED:
                plant_damaged_hour(lake_dir, NO_CROSSED_BOOKS, inst_id, hour, RECORDS)
            else:
                plant_good_hour(lake_dir, inst_id, hour, count=RECORDS)
    return {key(inst_id, offset) for inst_id in (BTC, ETH) for offset in range(HOURS)}, key(*DAMAGED)


def sessions_opened(server: PostgresServer, db_name: str) -> int:
    """Connections made to `db_name` so far (dagster-postgres opens one per query outside the
    webserver: its engines use NullPool)."""
    conn = server.connect(db_name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_force_next_flush()")
            cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (db_name,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def registration_flow(tmp_path: Path, monkeypatch, server: PostgresServer | None) -> tuple[float, int | None]:
    """One sensor-daemon tick registers the planted lake as one backfill, which the backfill and
    run queue daemons run to the end. Checks the outcome; returns the wall time of tick + backfill
    and, on PostgreSQL, the connections made meanwhile."""
    lake_dir = tmp_path / "lake"
    everything, damaged = plant_registration_lake(lake_dir)
    set_lake_env(monkeypatch, lake_dir, f"{BTC},{ETH}")
    with deploy_instance(tmp_path / "dagster_home", monkeypatch, server) as instance, \
            daemon_workspace(instance, code_location()) as workspace:
        db_name = os.environ["DAGSTER_PG_DB"] if server else ""
        sessions_before = sessions_opened(server, db_name) if server else 0
        started = time.perf_counter()
        tick, cursor = sensor_daemon_tick(instance, workspace, datetime.now(UTC))
        assert tick.status == TickStatus.SUCCESS, tick.error
        assert cursor is not None
        (backfill,) = instance.get_backfills()
        assert backfill_partitions(backfill) == {"raw_hour": everything, **parquet_tiers(everything)}
        done = run_backfill(instance, workspace, backfill.backfill_id, timeout=120)
        elapsed = time.perf_counter() - started
        sessions = sessions_opened(server, db_name) - sessions_before if server else None

        assert done.status == BulkActionStatus.COMPLETED_SUCCESS
        runs = backfill_runs(instance, backfill.backfill_id)
        assert len(runs) == 2 and all(run.status == DagsterRunStatus.SUCCESS for run in runs)  # a range per instrument
        assert instance.get_materialized_partitions(RAW_HOUR) == everything
        expected = {name: {"SUCCEEDED": everything} for name in HOUR_CHECKS}
        expected[NO_CROSSED_BOOKS] = {"FAILED": {damaged}, "SUCCEEDED": everything - {damaged}}
        assert check_status(instance, lake_resource(lake_dir, coverage_threshold_pct=0)) == expected
        return elapsed, sessions


def test_deploy_config_loads_on_postgres(postgres_server, tmp_path, monkeypatch):
    """deploy/dagster.yaml loads with the DAGSTER_PG_* variables: every storage is PostgreSQL (its
    tables created in the configured database), runs are queued, launched by the default launcher;
    what one instance stores, another loaded from the same file reads."""
    with deploy_instance(tmp_path / "home", monkeypatch, postgres_server) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == MAX_CONCURRENT_RUNS
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert not instance.telemetry_enabled
        assert instance.get_runs() == []  # the tables exist and answer

        conn = postgres_server.connect(os.environ["DAGSTER_PG_DB"])
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                tables = {row[0] for row in cur.fetchall()}
        finally:
            conn.close()
        assert {"runs", "event_logs", "instigators", "job_ticks", "bulk_actions"} <= tables

        with DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as other:
            other.add_dynamic_partitions("probe", ["written-by-another-instance"])
        assert instance.get_dynamic_partitions("probe") == ["written-by-another-instance"]


def test_grpc_workspace_file_names_the_code_server(monkeypatch):
    """deploy/workspace.grpc.yaml, read by Dagster's workspace loader: one code location,
    `l2_pipeline`, at L2_CODE_SERVER_HOST:L2_CODE_SERVER_PORT."""
    monkeypatch.setenv("L2_CODE_SERVER_HOST", "l2-code.internal")
    monkeypatch.setenv("L2_CODE_SERVER_PORT", "4000")
    (origin,) = location_origins_from_yaml_paths([str(GRPC_WORKSPACE)])
    assert isinstance(origin, GrpcServerCodeLocationOrigin)
    assert (origin.location_name, origin.host, origin.port) == (LOCATION, "l2-code.internal", 4000)


def test_registration_on_postgres_and_sqlite(postgres_server, tmp_path, monkeypatch):
    """The registration flow on PostgreSQL and, for the timing, on SQLite (same config file, same
    lake): both end with every partition materialized and its checks current."""
    sqlite, _ = registration_flow(tmp_path / "sqlite", monkeypatch, None)
    postgres, sessions = registration_flow(tmp_path / "postgres", monkeypatch, postgres_server)
    print(f"\nregistration flow (sensor tick -> backfill -> 2 runs of {2 * HOURS} hours, checks included): "
          f"SQLite {sqlite:.2f} s, PostgreSQL {postgres:.2f} s ({sessions} connections), "
          f"PostgreSQL/SQLite = {postgres / sqlite:.2f}x")


def test_ui_cursor_reset_through_a_grpc_code_server(postgres_server, tmp_path, monkeypatch):
    """The reregistration test's daemon case on PostgreSQL, with the code location on its own code
    server loaded through deploy/workspace.grpc.yaml: after a UI cursor reset the next daemon tick
    succeeds, keeps the cursor and requests only the hour whose file changed."""
    lake_dir = tmp_path / "lake"
    for offset in range(3):
        plant_good_hour(lake_dir, BTC, BASE_HOUR + timedelta(hours=offset), count=10)
    set_lake_env(monkeypatch, lake_dir, BTC)
    lake = lake_resource(lake_dir, instruments=[BTC], coverage_threshold_pct=0)
    hours = {key(BTC, offset) for offset in range(3)}
    with deploy_instance(tmp_path / "dagster_home", monkeypatch, postgres_server) as instance, \
            grpc_code_server(tmp_path / "code_server.log") as port:
        monkeypatch.setenv("L2_CODE_SERVER_HOST", "127.0.0.1")
        monkeypatch.setenv("L2_CODE_SERVER_PORT", str(port))
        with daemon_workspace(instance, WorkspaceFileTarget(paths=[str(GRPC_WORKSPACE)])) as workspace:
            start = datetime.now(UTC)
            first, cursor = sensor_daemon_tick(instance, workspace, start)
            assert first.status == TickStatus.SUCCESS and cursor is not None, first.error
            (backfill,) = instance.get_backfills()
            assert backfill_partitions(backfill) == {"raw_hour": hours, **parquet_tiers(hours)}
            assert run_backfill(instance, workspace, backfill.backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
            assert check_status(instance, lake) == {name: {"SUCCEEDED": hours} for name in HOUR_CHECKS}
            append_record(lake_dir, BTC, BASE_HOUR + timedelta(hours=1))

            reset_sensor_cursor(workspace, location=LOCATION)  # the UI's GraphQL mutation
            second, cursor_after_reset = sensor_daemon_tick(instance, workspace, start + timedelta(minutes=2))
            assert second.status == TickStatus.SUCCESS, second.error
            assert cursor_after_reset == cursor
            (rereg,) = [b for b in instance.get_backfills() if b.backfill_id != backfill.backfill_id]
            assert backfill_partitions(rereg) == {"raw_hour": {key(BTC, 1)}, **parquet_tiers({key(BTC, 1)})}
            assert run_backfill(instance, workspace, rereg.backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
            assert latest_raw_hour(instance, key(BTC, 1)).metadata["records"].value == 11
            assert check_status(instance, lake) == {name: {"SUCCEEDED": hours} for name in HOUR_CHECKS}
            assert Counter(r.partition_key for r in instance.fetch_materializations(RAW_HOUR, limit=100).records) \
                == {key(BTC, 0): 1, key(BTC, 1): 2, key(BTC, 2): 1}
            # DefaultRunLauncher had each run started by the code server it was loaded from
            runs = instance.get_runs()  # the two backfills' runs, and lake_health_sensor's redraws
            launched_by = [json.loads(run.tags[GRPC_INFO_TAG]) for run in runs]
            assert launched_by == [{"host": "127.0.0.1", "port": port}] * len(runs), launched_by
            assert sum(run.job_name != "lake_health_job" for run in runs) == 2


@pytest.mark.parametrize("variable", ["DAGSTER_PG_HOST", "DAGSTER_PG_DB"])
def test_deploy_config_names_a_missing_variable(tmp_path, monkeypatch, variable):
    """Without one of its variables the instance does not load, and the error names it."""
    home = deploy_home(tmp_path / "home")
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "x")
    monkeypatch.delenv(variable)
    with pytest.raises(DagsterInvalidConfigError, match=f'environment variable "{variable}" which is not set'):
        DagsterInstance.from_config(str(home))
