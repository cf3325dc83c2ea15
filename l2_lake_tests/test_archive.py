"""Verified gzip archiving: content identity, idempotence, open-hour refusal, kill safety."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from l2_lake.format import layout
from l2_lake.tiers import archive
from l2_lake.tiers.archive import ArchiveVerificationError, Digest, OpenHourError, archive_hour
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, ms, plant_good_hour

NOW = BASE_HOUR + timedelta(days=1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_archive_is_verified_and_original_removed(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR)
    original = layout.records_path(tmp_path, BTC, BASE_HOUR)
    data = original.read_bytes()
    result = archive_hour(tmp_path, BTC, BASE_HOUR, NOW)
    final = layout.archive_path(tmp_path, BTC, BASE_HOUR)
    assert result.status == "archived" and result.archive == final
    assert not original.exists()
    restored = gzip.decompress(final.read_bytes())
    assert sha(restored) == sha(data) == result.sha256
    assert result.lines == data.count(b"\n") == 1800 and result.original_bytes == len(data)
    assert [p.name for p in final.parent.iterdir()] == ["00.jsonl.gz"]  # no temp left behind
    assert result.metadata()["compression_ratio"] > 1


def test_second_run_is_a_no_op(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR)
    archive_hour(tmp_path, BTC, BASE_HOUR, NOW)
    final = layout.archive_path(tmp_path, BTC, BASE_HOUR)
    before = (final.read_bytes(), final.stat().st_mtime_ns)
    again = archive_hour(tmp_path, BTC, BASE_HOUR, NOW)
    assert again.status == "already_archived" and not again.changed_lake
    assert (final.read_bytes(), final.stat().st_mtime_ns) == before
    assert archive_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=1), NOW).status == "no_data"


def test_open_hour_and_grace_are_refused(tmp_path):
    now = datetime.now(UTC)
    current = layout.hour_floor(ms(now))
    plant_good_hour(tmp_path, BTC, current, count=3)
    with pytest.raises(OpenHourError):
        archive_hour(tmp_path, BTC, current, now)
    assert layout.records_path(tmp_path, BTC, current).exists()
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=3)
    just_ended = BASE_HOUR + timedelta(hours=1, minutes=1)
    with pytest.raises(OpenHourError):
        archive_hour(tmp_path, BTC, BASE_HOUR, just_ended, grace=timedelta(minutes=2))
    assert archive_hour(tmp_path, BTC, BASE_HOUR, just_ended + timedelta(minutes=1)).status == "archived"


def test_stray_temp_from_a_killed_run_is_cleaned(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=20)
    directory = layout.records_path(tmp_path, BTC, BASE_HOUR).parent
    stray = directory / ".00.jsonl.gz.deadbeef.tmp"
    stray.write_bytes(b"\x1f\x8b half a gzip")
    other_hour_temp = directory / ".01.jsonl.gz.cafe.tmp"  # belongs to another hour: left alone
    other_hour_temp.write_bytes(b"x")
    result = archive_hour(tmp_path, BTC, BASE_HOUR, NOW)
    assert result.status == "archived" and result.removed_temps == 1
    assert not stray.exists() and other_hour_temp.exists()


def test_kill_between_rename_and_unlink_is_completed(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=20)
    original = layout.records_path(tmp_path, BTC, BASE_HOUR)
    final = layout.archive_path(tmp_path, BTC, BASE_HOUR)
    final.write_bytes(gzip.compress(original.read_bytes()))
    result = archive_hour(tmp_path, BTC, BASE_HOUR, NOW)
    assert result.status == "completed_removal" and not original.exists()


def test_damaged_archive_next_to_original_is_rebuilt(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=20)
    original = layout.records_path(tmp_path, BTC, BASE_HOUR)
    data = original.read_bytes()
    final = layout.archive_path(tmp_path, BTC, BASE_HOUR)
    final.write_bytes(gzip.compress(data)[:-30])  # truncated
    result = archive_hour(tmp_path, BTC, BASE_HOUR, NOW)
    assert result.status == "archived" and gzip.decompress(final.read_bytes()) == data


def test_failed_verification_keeps_the_original(tmp_path, monkeypatch):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=20)
    original = layout.records_path(tmp_path, BTC, BASE_HOUR)
    data = original.read_bytes()
    monkeypatch.setattr(archive, "digest_archive", lambda path, name=None: Digest(0, "0" * 64, 0))
    with pytest.raises(ArchiveVerificationError):
        archive_hour(tmp_path, BTC, BASE_HOUR, NOW)
    assert original.read_bytes() == data
    assert [p.name for p in original.parent.iterdir()] == ["00.jsonl"]


def test_interrupted_rename_keeps_the_original(tmp_path, monkeypatch):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=20)
    original = layout.records_path(tmp_path, BTC, BASE_HOUR)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(archive.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        archive_hour(tmp_path, BTC, BASE_HOUR, NOW)
    assert [p.name for p in original.parent.iterdir()] == ["00.jsonl"]


def test_hour_locked_by_another_run_is_busy(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=5)
    with open(layout.records_path(tmp_path, BTC, BASE_HOUR), "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert archive_hour(tmp_path, BTC, BASE_HOUR, NOW).status == "busy"
    assert archive_hour(tmp_path, BTC, BASE_HOUR, NOW).status == "archived"
