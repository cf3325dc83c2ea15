"""Fixtures of the pipeline tests (the shared ones are in the root `conftest.py`): `postgres_server`,
a throwaway PostgreSQL server for the session (`l2_pipeline_tests/postgres_server.py`), and
`s3_server`, moto's S3 server as a process on loopback (`collector_tests/s3_server.py`)."""

from __future__ import annotations

from collector_tests.s3_server import s3_server
from l2_pipeline_tests.postgres_server import postgres_server

__all__ = ["postgres_server", "s3_server"]
