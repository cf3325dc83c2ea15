"""Fixtures of the lake library's tests (the shared ones are in the root `conftest.py`): `s3_server`,
moto's S3 server as a process on loopback (`collector_tests/s3_server.py`), for the readers of a
lake in a bucket."""

from __future__ import annotations

from collector_tests.s3_server import s3_server

__all__ = ["s3_server"]
