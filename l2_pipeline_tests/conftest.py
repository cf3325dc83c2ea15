"""Shared fixtures: paths of the recorded OKX reference data."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REFERENCE_DIR = Path(__file__).resolve().parent / "okx_reference"


def reference_file(name: str) -> Path:
    """A recorded OKX file bundled with the tests (provenance in okx_reference/README.md)."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.fail(f"reference file {name} not found in {REFERENCE_DIR}")
    return path


# Fuzz example counts: `ci` (default) keeps the suite fast; HYPOTHESIS_PROFILE=fuzz-long (README) runs
# 100k examples per fuzz test (500k frames and streams in all), about 45 minutes.
settings.register_profile("ci", max_examples=500, deadline=None)
settings.register_profile("fuzz-long", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
