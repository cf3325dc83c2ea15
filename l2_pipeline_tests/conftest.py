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
