"""Fixtures of the collector tests only (the shared ones are in the repository's conftest.py)."""

from collector_tests.s3_server import fault_proxy_factory, s3_server, s3_server_fn  # noqa: F401 - fixtures
