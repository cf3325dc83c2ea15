"""Shared fixtures: paths of the recorded OKX reference data."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
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


# `pytest l2_pipeline_tests/test_fuzz.py --hypothesis-profile=fuzz-long --timeout 0`: ~300k examples per test (README).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("fuzz-long", max_examples=300_000, deadline=None,
                          suppress_health_check=list(HealthCheck))


def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real small filesystem for disk-full tests; skips with the reason where mounting is impossible."""
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs to simulate a full disk (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
