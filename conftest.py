"""Fixtures shared by the lake library's tests (`l2_lake_tests/`), the collector's (`collector_tests/`) and
the pipeline's (`l2_pipeline_tests/`): the hypothesis profiles and a real small filesystem for disk-full tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Fuzz example counts: `ci` (default) keeps the suite fast; HYPOTHESIS_PROFILE=fuzz-long (docs/TESTING.md) runs
# 100k examples per fuzz test (500k frames and streams in all), about 45 minutes.
settings.register_profile("ci", max_examples=500, deadline=None)
settings.register_profile("fuzz-long", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The collector's end-to-end tests and soak time real processes on the machine's cores: mark them
    `timed`, so scripts/test.sh runs them one at a time and everything else in parallel."""
    for item in items:
        if "collector_tests" in item.path.parts and (item.get_closest_marker("e2e") or item.get_closest_marker("soak")):
            item.add_marker(pytest.mark.timed)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`tmpfs("256k")` mounts a real filesystem of that size under tmp_path (unmounted afterwards);
    skips with the reason where mounting is impossible (it needs root)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mount_point = tmp_path / f"tmpfs{len(mounted)}"
        mount_point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs to simulate a full disk (needs root): {result.stderr.strip()}")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
