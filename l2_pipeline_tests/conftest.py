"""Fixtures of the pipeline tests (the shared ones are in the root `conftest.py`): `postgres_server`,
a throwaway PostgreSQL server for the session (`l2_pipeline_tests/postgres_server.py`)."""

from __future__ import annotations

from l2_pipeline_tests.postgres_server import postgres_server

__all__ = ["postgres_server"]
