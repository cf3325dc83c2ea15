"""The one place the pipeline tests get their Dagster instances from, on SQLite or on PostgreSQL.

`L2_TEST_DAGSTER_STORAGE` chooses where every instance of the pipeline tests keeps its runs, event
log and schedules:

- `sqlite` (the default): as Dagster's test helpers keep them. `DagsterInstance.ephemeral()` (in
  memory) where a test only needs somewhere to run assets; `instance_for_test` (SQLite files in a
  DAGSTER_HOME) where it needs a persistent instance.
- `postgres`: in PostgreSQL, configured like deploy/dagster.yaml's `storage: postgres:` section
  (dagster-postgres's run, event log and schedule storage), each instance in a database of its
  own on the session's throwaway server (`postgres_server`, l2_pipeline_tests/postgres_server.py;
  under pytest-xdist each worker has its own session, so its own server). A database is a copy of
  a template database Dagster's tables were created in once per session (creating them takes
  seconds, copying them a tenth of one), and is dropped when the instance is closed. An instance
  that is not in memory on SQLite is `instance_for_test`'s, so its DAGSTER_HOME holds a
  dagster.yaml naming its database: code servers, run processes, daemons and `dagster` CLI
  commands started from it use the same database. Where no server can be started the tests fail.

Tests take the fixture `instance` (in memory on SQLite), `persistent_instance` (in
`tmp_path/dagster_home`), or the session's `dagster_instances` (a `DagsterInstances`) for an
instance of their own making: `ephemeral()`, `persistent(home, ...)`, and `home(home)`, a
DAGSTER_HOME for processes that load the instance themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, instance_for_test
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget

from l2_pipeline_tests.postgres_server import PostgresServer

REPO = Path(__file__).resolve().parents[1]
LOCATION = "l2_pipeline"
STORAGE_ENV = "L2_TEST_DAGSTER_STORAGE"
SQLITE, POSTGRES = "sqlite", "postgres"
# what DagsterInstance.ephemeral() does not have either: captured stdout/stderr files of each step
NO_COMPUTE_LOGS = {"compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager",
                                    "class": "NoOpComputeLogManager"}}


def storage_choice() -> str:
    """`sqlite` or `postgres`: the value of L2_TEST_DAGSTER_STORAGE (unset or empty: sqlite)."""
    choice = os.environ.get(STORAGE_ENV) or SQLITE
    if choice not in (SQLITE, POSTGRES):
        raise pytest.UsageError(f"{STORAGE_ENV}={choice!r}: expected {SQLITE!r} (the default) or {POSTGRES!r}")
    return choice


def code_location() -> ModuleTarget:
    """The code location as workspace.yaml loads it (in a code server the workspace starts)."""
    return ModuleTarget(module_name="l2_pipeline.definitions", attribute="defs", working_directory=str(REPO),
                        location_name=LOCATION)


@dataclass(frozen=True)
class DagsterInstances:
    """Makes the tests' instances: on SQLite when `server` is None, else each on a new database of
    `server` copied from `template` (see the module docstring)."""

    server: PostgresServer | None = None
    template: str | None = None

    @classmethod
    def on_postgres(cls, server: PostgresServer) -> DagsterInstances:
        """Instances on `server`, after creating the template database with Dagster's tables in it."""
        template = server.create_database("dagster_template")
        with instance_for_test(overrides=server.dagster_storage(template), set_dagster_home=False):
            pass  # loading the storages creates the tables and stamps their schema version
        server.seal_template(template)
        return cls(server, template)

    @property
    def storage(self) -> str:
        return SQLITE if self.server is None else POSTGRES

    @contextmanager
    def storage_config(self) -> Iterator[dict[str, Any]]:
        """The instance config's `storage` section for a new instance ({} on SQLite: Dagster's
        default); on PostgreSQL a new database, dropped on exit."""
        if self.server is None:
            yield {}
            return
        db_name = self.server.create_database("test", template=self.template)
        try:
            yield self.server.dagster_storage(db_name)
        finally:
            self.server.drop_database(db_name)

    @contextmanager
    def ephemeral(self) -> Iterator[DagsterInstance]:
        """An instance for a test's own runs: `DagsterInstance.ephemeral()` on SQLite; on PostgreSQL an
        instance in a temp dir, without compute logs, as the in-memory one."""
        if self.server is None:
            with DagsterInstance.ephemeral() as instance:
                yield instance
            return
        with self.storage_config() as storage, \
                instance_for_test(overrides={**storage, **NO_COMPUTE_LOGS}, set_dagster_home=False) as instance:
            yield instance

    @contextmanager
    def persistent(self, home: Path, **options: Any) -> Iterator[DagsterInstance]:
        """`instance_for_test(temp_dir=home, **options)` (it sets DAGSTER_HOME=home while open), with
        this storage; `home` is created if missing."""
        home.mkdir(parents=True, exist_ok=True)
        with self.storage_config() as storage, \
                instance_for_test(overrides=storage or None, temp_dir=str(home), **options) as instance:
            yield instance

    @contextmanager
    def daemon_workspace(self, home: Path) -> Iterator[tuple[DagsterInstance, WorkspaceProcessContext]]:
        """A persistent instance in `home` whose runs are launched as soon as they are submitted (by the
        default run launcher: a process per run, started by the code server), and the code location
        loaded in it as `dagster dev` and the daemons load it. The code server and the runs read the
        code location's settings from the environment."""
        with self.persistent(home, synchronous_run_coordinator=True) as instance, \
                create_test_daemon_workspace_context(code_location(), instance) as workspace:
            yield instance, workspace

    @contextmanager
    def home(self, home: Path) -> Iterator[Path]:
        """A DAGSTER_HOME for processes that load the instance from it themselves (the `dagster` CLI):
        on SQLite `home` as it is (Dagster's default storage in it), on PostgreSQL created holding a
        dagster.yaml with this storage, valid until exit."""
        with self.storage_config() as storage:
            if storage:
                home.mkdir(parents=True, exist_ok=True)
                (home / "dagster.yaml").write_text(yaml.safe_dump(storage))
            yield home


@pytest.fixture(scope="session")
def dagster_instances(request: pytest.FixtureRequest) -> DagsterInstances:
    """The session's `DagsterInstances`, on the storage L2_TEST_DAGSTER_STORAGE chooses (PostgreSQL:
    the session's `postgres_server`, started on first use)."""
    if storage_choice() == SQLITE:
        return DagsterInstances()
    try:
        server = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception as exc:
        pytest.fail(f"{STORAGE_ENV}={POSTGRES}, but {exc}", pytrace=False)
    return DagsterInstances.on_postgres(server)


@pytest.fixture
def instance(dagster_instances: DagsterInstances) -> Iterator[DagsterInstance]:
    """A test's own instance: in memory on SQLite (`DagsterInstances.ephemeral`)."""
    with dagster_instances.ephemeral() as inst:
        yield inst


@pytest.fixture
def persistent_instance(dagster_instances: DagsterInstances, tmp_path: Path) -> Iterator[DagsterInstance]:
    """A persistent instance in `tmp_path/dagster_home` (`DagsterInstances.persistent`)."""
    with dagster_instances.persistent(tmp_path / "dagster_home") as inst:
        yield inst
