"""A killed step's `.l2-work-*` workspace (a whole staged hour) is removed after an age limit and
reported (the spool's `.stale` archives: collector_tests/test_ship.py). Against moto's S3 server as a
process on loopback."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from collector_tests.s3_server import S3Server, s3_env
from l2_lake.format import layout
from l2_lake.store.s3 import LakeUrl, S3Store
from l2_lake.store.tree import WORKSPACE_MAX_AGE_S, WORKSPACE_PREFIX, ObjectTree


def aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_a_killed_steps_workspace_is_removed_after_a_day(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s3_env(monkeypatch, s3_server.endpoint)
    work = tmp_path / "work"
    old, fresh = work / f"{WORKSPACE_PREFIX}old", work / f"{WORKSPACE_PREFIX}running"
    for directory in (old, fresh):
        (directory / "raw").mkdir(parents=True)
        (directory / "raw" / "13.jsonl").write_bytes(b"a staged hour\n")
    aged(old, WORKSPACE_MAX_AGE_S + 60)
    tree = ObjectTree(S3Store(LakeUrl(s3_server.create_bucket(), "lake")), work)
    with caplog.at_level(logging.WARNING, logger="l2_lake.store.tree"), \
            tree.files_workspace(layout.META_PREFIX) as root:
        assert root.is_dir()
    assert not old.exists() and fresh.exists()
    assert [r.path for r in caplog.records if getattr(r, "event", "") == "stale_workspace_removed"] == [str(old)]
