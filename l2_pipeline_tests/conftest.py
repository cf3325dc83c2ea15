"""Fixtures of the pipeline tests (the shared ones are in the root `conftest.py`): `postgres_server`,
a throwaway PostgreSQL server for the session (`l2_pipeline_tests/postgres_server.py`); the Dagster
instances, on SQLite or (L2_TEST_DAGSTER_STORAGE=postgres) on PostgreSQL: `dagster_instances`,
`instance` and `persistent_instance` (`l2_pipeline_tests/instances.py`); `rabbitmq_server`, a throwaway
RabbitMQ broker for the session (`l2_pipeline_tests/rabbitmq_server.py`); and `s3_server`, moto's S3
server as a process on loopback, and `fault_proxy_factory`, a fault-injecting proxy in front of it
(`collector_tests/s3_server.py`)."""

from __future__ import annotations

from collector_tests.s3_server import fault_proxy_factory, s3_server
from l2_pipeline_tests.instances import dagster_instances, instance, persistent_instance
from l2_pipeline_tests.postgres_server import postgres_server
from l2_pipeline_tests.rabbitmq_server import rabbitmq_server

__all__ = ["dagster_instances", "fault_proxy_factory", "instance", "persistent_instance", "postgres_server",
           "rabbitmq_server", "s3_server"]
