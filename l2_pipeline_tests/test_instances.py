"""The pipeline tests' Dagster instances follow L2_TEST_DAGSTER_STORAGE (l2_pipeline_tests/instances.py):
by default in memory and SQLite, as Dagster's test helpers make them; with `postgres` every kind is
on PostgreSQL, in a database of its own that is gone once the instance is closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from sqlalchemy.engine import make_url

from l2_pipeline_tests.instances import POSTGRES, SQLITE, DagsterInstances, storage_choice

STORAGES = {SQLITE: (SqliteRunStorage, SqliteEventLogStorage, SqliteScheduleStorage),
            POSTGRES: (PostgresRunStorage, PostgresEventLogStorage, PostgresScheduleStorage)}


def storage_classes(instance: DagsterInstance) -> tuple[type, ...]:
    return type(instance.run_storage), type(instance.event_log_storage), type(instance.schedule_storage)


def database(instance: DagsterInstance) -> str:
    """The PostgreSQL database an instance stores its runs in."""
    return str(make_url(instance.run_storage.postgres_url).database)


def server_databases(instances: DagsterInstances) -> set[str]:
    assert instances.server is not None
    conn = instances.server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def test_every_kind_of_instance_is_on_the_chosen_storage(dagster_instances, instance, persistent_instance,
                                                         tmp_path: Path):
    assert dagster_instances.storage == storage_choice()
    if dagster_instances.storage == SQLITE:
        assert not instance.is_persistent  # DagsterInstance.ephemeral(), as the tests had it
    else:
        assert storage_classes(instance) == STORAGES[POSTGRES]
    assert storage_classes(persistent_instance) == STORAGES[dagster_instances.storage]
    # what a process loading the DAGSTER_HOME (a code server, a run, the CLI) finds: the same storage
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as loaded:
        assert storage_classes(loaded) == STORAGES[dagster_instances.storage]
    (tmp_path / "cli_home").mkdir()
    with dagster_instances.home(tmp_path / "cli_home") as home, DagsterInstance.from_config(str(home)) as loaded:
        assert storage_classes(loaded) == STORAGES[dagster_instances.storage]


def test_each_postgres_instance_has_a_database_of_its_own(dagster_instances, tmp_path: Path):
    if dagster_instances.storage != POSTGRES:
        pytest.skip("L2_TEST_DAGSTER_STORAGE is not postgres")
    with dagster_instances.ephemeral() as first, dagster_instances.persistent(tmp_path) as second:
        names = {database(first), database(second)}
        assert len(names) == 2 and names <= server_databases(dagster_instances)
        first.add_dynamic_partitions("probe", ["first"])
        assert first.get_dynamic_partitions("probe") == ["first"] and second.get_dynamic_partitions("probe") == []
        assert second.get_runs() == []  # Dagster's tables are there, from the template
    assert names.isdisjoint(server_databases(dagster_instances))  # dropped when closed
