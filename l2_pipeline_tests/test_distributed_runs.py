"""Runs whose steps execute on Celery workers (`L2_EXECUTOR=celery`, docs/DISTRIBUTED.md), every piece a
real process on loopback: PostgreSQL holds the instance (`deploy/celery/dagster.yaml` as shipped),
moto's S3 server the lake (`L2_LAKE_URL`), RabbitMQ is the broker, and two workers
(`celery -A l2_pipeline.celery_app worker`) each have a work dir and a DAGSTER_HOME of their own, as
on two other hosts.

Closed hours are shipped into the bucket by the collector's shipper; the sensor daemon's tick
requests their backfill, and the backfill and run-queue daemons launch its runs (a process per run,
started by the code server), whose steps the two workers share. Once each worker has finished a
step, one of them is caught running another: its process group is stopped (SIGSTOP), the event log is read
again to be sure the step has not finished (so its message is not acknowledged yet), and the group is
SIGKILLed. RabbitMQ hands the step's message to the other worker, which runs the step again. The
backfill must still end green with every hour exact: records and sha256 in raw_hour's metadata, the
checks passed, and the curated Parquet read back from the bucket equal to the planted hours.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.instance_for_test import cleanup_test_instance
from dagster._daemon.sensor import execute_sensor_iteration

from collector.ship import Shipper
from collector_tests.s3_server import s3_env
from l2_lake.format import layout
from l2_lake.quality.verdicts import HOUR_CHECKS
from l2_pipeline import read_books
from l2_pipeline.keys import BOOK_FEATURES, CURATED_PARQUET, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.instances import REPO, code_location
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    NO_FIGURES,
    backfill_runs,
    check_status,
    lake_resource,
    latest_raw_hour,
    plant_good_hour,
    run_backfill,
)
from l2_pipeline_tests.test_pipeline_postgres import daemon_workspace

pytest.importorskip("dagster_celery")  # the `celery` extra (in `dev`: CI has it)
pytestmark = pytest.mark.timed  # a dozen processes on the machine's cores: scripts/test.sh runs it alone

CONFIG = REPO / "deploy" / "celery" / "dagster.yaml"
HOURS = [BASE_HOUR + timedelta(hours=i) for i in range(3)]
INSTRUMENTS = (BTC, ETH)
RECORDS, DEPTH = 1800, 5  # full hours at a 2 s cadence (coverage passes), small books (fast)
WORKERS = ("w1", "w2")
READY_SECONDS = 120
CELERY_WORKER = "Celery worker"  # the metadata key dagster-celery's task puts in its "Executing steps" event


@dataclass
class Worker:
    """A worker process (`celery … worker`, concurrency 1) in a session of its own: killing its group
    kills its pool process too, as when its host dies."""

    name: str
    root: Path
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    def env(self) -> dict[str, str]:
        """This process's environment (the code location's, the instance's, the broker's) with the
        worker's own work dir and DAGSTER_HOME, and this checkout first on the import path."""
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, "L2_DATA_DIR": str(self.root / "work"),
                "DAGSTER_HOME": str(self.root / "dagster_home")}

    def start(self) -> None:
        (self.root / "dagster_home").mkdir(parents=True)
        shutil.copy(CONFIG, self.root / "dagster_home" / "dagster.yaml")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "l2_pipeline.celery_app", "worker", "-Q", "dagster",
                 "--concurrency", "1", "--prefetch-multiplier", "1", "-n", f"{self.name}@%h", "--without-gossip",
                 "--without-mingle", "--loglevel", "INFO"],
                cwd=self.root, env=self.env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while " ready." not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"worker {self.name} not ready:\n{self.log.read_text()}"
            time.sleep(0.2)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        with suppress(ProcessLookupError):
            self.signal(signal.SIGKILL)  # the pool process too, whatever the main one did
        self.proc.wait(timeout=20)


@dataclass(frozen=True)
class Attempt:
    """A worker's "Executing steps" event for a step of a run, and whether the step ended after it."""

    run_id: str
    step_key: str
    worker: str
    ended: bool


def attempts(instance: DagsterInstance, run_id: str) -> list[Attempt]:
    """Each time a worker took a step of the run, in order; `ended` when the step succeeded or
    failed after it (before anyone took it again)."""
    found: list[tuple[str, str, int]] = []
    ends: dict[str, list[int]] = {}
    for index, entry in enumerate(instance.all_logs(run_id)):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == DagsterEventType.ENGINE_EVENT and CELERY_WORKER in event.engine_event_data.metadata:
            worker = str(event.engine_event_data.metadata[CELERY_WORKER].value).split("@")[0]
            found.append((entry.step_key, worker, index))
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            ends.setdefault(entry.step_key, []).append(index)
    result = []
    for n, (step_key, worker, index) in enumerate(found):
        later = [i for s, _, i in found[n + 1:] if s == step_key]
        until = later[0] if later else float("inf")
        result.append(Attempt(run_id, step_key, worker, any(index < i < until for i in ends.get(step_key, []))))
    return result


@dataclass
class Killer:
    """Watches the backfill's runs from a thread; once each worker has finished a step, kills one that is
    in the middle of another (see the module docstring)."""

    home: Path
    backfill_id: str
    workers: dict[str, Worker]
    victim: Attempt | None = None
    seen_before_kill: set[str] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def watch(self) -> None:
        try:
            with DagsterInstance.from_config(str(self.home)) as instance:
                while not self.done.is_set() and self.victim is None:
                    self._look(instance)
                    time.sleep(0.1)
        except BaseException as exc:  # reported by the test's thread
            self.error = exc

    def _look(self, instance: DagsterInstance) -> None:
        runs = [run.run_id for run in backfill_runs(instance, self.backfill_id)]
        everything = [a for run_id in runs for a in attempts(instance, run_id)]
        seen = {a.worker for a in everything if a.ended}
        if seen != set(self.workers):  # not before each worker has finished a step
            return
        for attempt in (a for a in everything if not a.ended):
            worker = self.workers[attempt.worker]
            worker.signal(signal.SIGSTOP)
            now = [a for a in attempts(instance, attempt.run_id) if a.step_key == attempt.step_key]
            if now and now[-1] == attempt:  # still running there, so still unacknowledged: kill
                worker.signal(signal.SIGKILL)
                worker.proc.wait(timeout=20)
                self.victim, self.seen_before_kill = attempt, seen
                return
            worker.signal(signal.SIGCONT)  # it had just finished: wait for another


@contextmanager
def celery_instance(home: Path, monkeypatch: pytest.MonkeyPatch, postgres_server) -> Iterator[DagsterInstance]:
    """deploy/celery/dagster.yaml as shipped, in `home`, on a new database of the session's server; the
    DAGSTER_PG_* variables set for every process started from here (code server, runs, workers)."""
    home.mkdir(parents=True)
    shutil.copy(CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in postgres_server.dagster_env(postgres_server.create_database("celery")).items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)) as instance:
        try:
            yield instance
        finally:
            cleanup_test_instance(instance)


def ship_lake(tmp_path: Path, url: str) -> Path:
    """The hours, shipped into `url` from a spool by the collector's shipper; returns a local copy."""
    spool, local = tmp_path / "spool", tmp_path / "local"
    for inst_id in INSTRUMENTS:
        for hour in HOURS:
            plant_good_hour(spool, inst_id, hour, count=RECORDS, depth=DEPTH)
    shutil.copytree(spool, local)
    Shipper(spool, url).ship_once()
    assert not list(layout.raw_root(spool).rglob("*.jsonl*")), "the shipper left hours in the spool"
    return local


def test_a_backfill_runs_on_two_workers_and_survives_one_killed_mid_step(
        postgres_server, rabbitmq_server, s3_server, tmp_path, monkeypatch):
    started = time.monotonic()
    s3_env(monkeypatch, s3_server.endpoint)
    url = f"s3://{s3_server.create_bucket()}/lake"
    local = ship_lake(tmp_path, url)
    settings = {"L2_LAKE_URL": url, "L2_DATA_DIR": str(tmp_path / "code-host"), "L2_INSTRUMENTS": ",".join(INSTRUMENTS),
                "L2_EXECUTOR": "celery", "L2_CELERY_BROKER": rabbitmq_server.url, **NO_FIGURES}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)  # read by the code server, the run processes and the workers
    keys = {str(partition_key(inst_id, hour)) for inst_id in INSTRUMENTS for hour in HOURS}

    with celery_instance(tmp_path / "dagster_home", monkeypatch, postgres_server) as instance:
        workers = {name: Worker(name, tmp_path / name) for name in WORKERS}
        try:
            for worker in workers.values():
                worker.start()
            for worker in workers.values():
                worker.wait_ready(time.monotonic() + READY_SECONDS)
            check = subprocess.run([sys.executable, "-c", "import l2_pipeline.celery_app as m; print(m.__file__)"],
                                   cwd=workers["w1"].root, env=workers["w1"].env(), capture_output=True, text=True,
                                   check=True)
            assert check.stdout.strip() == str(REPO / "l2_pipeline" / "celery_app.py")  # the workers' code
            ready = time.monotonic()

            with daemon_workspace(instance, code_location()) as workspace:
                list(execute_sensor_iteration(workspace, logging.getLogger("sensor-daemon"), None, None))
                (backfill,) = instance.get_backfills()
                killer = Killer(tmp_path / "dagster_home", backfill.backfill_id, workers)
                watcher = threading.Thread(target=killer.watch, daemon=True)
                watcher.start()
                try:
                    done = run_backfill(instance, workspace, backfill.backfill_id, timeout=180)
                finally:
                    killer.done.set()
                    watcher.join(timeout=30)
            finished = time.monotonic()
        finally:
            for worker in workers.values():
                worker.stop()

        assert killer.error is None, killer.error
        logs = "\n".join(f"--- {w.name}\n{w.log.read_text(errors='replace')[-3000:]}" for w in workers.values())
        assert killer.victim is not None, f"no worker was caught in the middle of a step\n{logs}"
        assert killer.seen_before_kill == set(WORKERS)  # both workers had finished steps before one was killed
        runs = backfill_runs(instance, backfill.backfill_id)
        assert done.status == BulkActionStatus.COMPLETED_SUCCESS, ([(r.run_id, r.status) for r in runs], logs)
        assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)

        # the killed worker's step went back to the broker and ran again, to its end, on the other worker
        victim = killer.victim
        again = [a for a in attempts(instance, victim.run_id) if a.step_key == victim.step_key]
        survivor = next(name for name in WORKERS if name != victim.worker)
        assert [(a.worker, a.ended) for a in again] == [(victim.worker, False), (survivor, True)], again
        executed = {a.worker for run in runs for a in attempts(instance, run.run_id)}
        assert executed == set(WORKERS)

        # every hour exact, whichever worker did it and however often
        for asset_key in (RAW_HOUR, RAW_ARCHIVE, CURATED_PARQUET, BOOK_FEATURES):
            assert instance.get_materialized_partitions(asset_key) == keys, asset_key
        for inst_id in INSTRUMENTS:
            for hour in HOURS:
                meta = latest_raw_hour(instance, str(partition_key(inst_id, hour))).metadata
                planted = layout.records_path(local, inst_id, hour)
                assert meta["records"].value == RECORDS
                assert meta["sha256"].value == hashlib.sha256(planted.read_bytes()).hexdigest()
            start, end = HOURS[0], HOURS[-1] + timedelta(hours=1)
            books = read_books(inst_id, start, end, lake=url, include_flagged=True)
            assert books.num_rows == RECORDS * len(HOURS)
            assert books.equals(read_books(inst_id, start, end, lake=local, include_flagged=True))
        lake = lake_resource(tmp_path / "check", lake_url=url)
        assert check_status(instance, lake) == {name: {"SUCCEEDED": keys} for name in HOUR_CHECKS}
    print(f"\ndistributed backfill: {len(runs)} runs; broker, S3, workers up in {ready - started:.1f} s; "
          f"backfill with one worker killed mid-step ({victim.step_key} on {victim.worker}, run again on "
          f"{survivor}) {finished - ready:.1f} s")
