"""Shared fixtures: paths of the recorded OKX reference data."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "okx_reference"
BUNDLED_REFERENCE_DIR = Path(__file__).resolve().parent / "okx_reference"


def reference_file(name: str) -> Path:
    """A recorded OKX file: the bundled copy (CI) or ../shared/okx_reference (development)."""
    for directory in (BUNDLED_REFERENCE_DIR, REFERENCE_DIR):
        if (directory / name).is_file():
            return directory / name
    pytest.fail(f"reference file {name} not found in {BUNDLED_REFERENCE_DIR} or {REFERENCE_DIR}")


# `pytest l2_pipeline_tests/test_fuzz.py --hypothesis-profile=fuzz-long` fuzzes for hours (README).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("fuzz-long", max_examples=50_000_000, deadline=None,
                          suppress_health_check=list(HealthCheck))
