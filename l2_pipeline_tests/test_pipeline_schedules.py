"""Compression and retention schedules evaluated at chosen times, and the runs they launch."""

from __future__ import annotations

import gzip
import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance, RunRequest, SkipReason, build_schedule_context

from collector import layout
from l2_pipeline.curated import write_parquet
from l2_pipeline.hours import floor_hour
from l2_pipeline.jobs import compress_job, retention_job
from l2_pipeline.keys import RAW_ARCHIVE
from l2_pipeline.partitions import partition_key
from l2_pipeline.retention import UnsafePath, check_inside_root, delete_files, plan_deletions
from l2_pipeline.schedules import compression_schedule, instrument_metadata_schedule, retention_schedule
from l2_pipeline.selection import LakeHour, compression_due
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, ETH, event, lake_resource, plant_good_hour, write_events


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def h(offset: float) -> datetime:
    return BASE_HOUR + timedelta(hours=offset)


def evaluate(schedule, lake, at: datetime):
    return schedule(build_schedule_context(scheduled_execution_time=at, resources={"lake": lake}))


def plant_ten_hours(data_dir) -> dict:
    originals = {}
    for inst_id in (BTC, ETH):
        for offset in range(10):
            plant_good_hour(data_dir, inst_id, h(offset), count=5, archived=(inst_id, offset) == (BTC, 2))
            path = layout.records_path(data_dir, inst_id, h(offset))
            if path.exists():
                originals[(inst_id, offset)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return originals


def keys_of(request: RunRequest) -> list[str]:
    return request.run_config["ops"]["compress_hours"]["config"]["partition_keys"]


def test_compression_selects_exactly_the_due_hours(tmp_path):
    plant_ten_hours(tmp_path)
    lake = lake_resource(tmp_path)
    at = h(10.25)  # 10:15 → hours that ended by 04:15 → 00..03 (BTC 02 already archived)
    request = evaluate(compression_schedule, lake, at)
    assert isinstance(request, RunRequest)
    expected = [(BTC, 0), (ETH, 0), (BTC, 1), (ETH, 1), (ETH, 2), (BTC, 3), (ETH, 3)]
    assert keys_of(request) == [str(partition_key(i, h(o))) for i, o in expected]
    assert request.run_key == "compress-2026-11-20T10:15:00Z" and request.tags["l2/hours"] == "7"
    # one minute earlier hour 03 had not been over for 6 h yet
    earlier = evaluate(compression_schedule, lake, h(9.98))
    assert len(keys_of(earlier)) == 5
    assert isinstance(evaluate(compression_schedule, lake, h(6.9)), SkipReason)
    # the boundary is inclusive: at 07:00 hour 00 (ended 01:00) is exactly 6 h old
    assert keys_of(evaluate(compression_schedule, lake, h(7))) == [str(partition_key(i, h(0))) for i in (BTC, ETH)]


def test_late_tick_behaves_as_if_on_time(tmp_path):
    plant_ten_hours(tmp_path)
    lake = lake_resource(tmp_path)
    # evaluated days after its scheduled time (wall clock is 2026-11-25+), it still selects as of 10:15
    assert compression_due(tmp_path, h(10.25), lake.compress_after, lake.grace) == compression_due(
        tmp_path, h(10.25), lake.compress_after, lake.grace, now=datetime.now(UTC))
    assert len(keys_of(evaluate(compression_schedule, lake, h(10.25)))) == 7


def test_compression_run_archives_and_is_idempotent(tmp_path, instance):
    originals = plant_ten_hours(tmp_path)
    lake = lake_resource(tmp_path)
    request = evaluate(compression_schedule, lake, h(10.25))
    result = compress_job.execute_in_process(run_config=request.run_config, instance=instance,
                                             resources={"lake": lake})
    assert result.success
    archived = {(BTC, 0), (ETH, 0), (BTC, 1), (ETH, 1), (ETH, 2), (BTC, 3), (ETH, 3)}
    for (inst_id, offset), digest in originals.items():
        plain = layout.records_path(tmp_path, inst_id, h(offset))
        gz = layout.archive_path(tmp_path, inst_id, h(offset))
        if (inst_id, offset) in archived:
            assert not plain.exists()
            assert hashlib.sha256(gzip.decompress(gz.read_bytes())).hexdigest() == digest
        else:
            assert plain.exists() and not gz.exists()
    mats = result.asset_materializations_for_node("compress_hours")
    assert {m.partition for m in mats} == set(keys_of(request)) and all(m.asset_key == RAW_ARCHIVE for m in mats)
    assert instance.get_materialized_partitions(RAW_ARCHIVE) == set(keys_of(request))
    # the same tick again finds nothing; re-running the same config changes nothing and succeeds
    assert isinstance(evaluate(compression_schedule, lake, h(10.25)), SkipReason)
    again = compress_job.execute_in_process(run_config=request.run_config, instance=instance, resources={"lake": lake})
    assert again.success and again.asset_materializations_for_node("compress_hours") == []


def test_catch_up_after_days_in_one_tick(tmp_path):
    for inst_id in (BTC, ETH):
        for offset in range(72):
            plant_good_hour(tmp_path, inst_id, h(offset), count=1)
    request = evaluate(compression_schedule, lake_resource(tmp_path), h(72 + 6))
    assert len(keys_of(request)) == 144


def test_open_hour_is_never_selected(tmp_path):
    now = datetime.now(UTC)
    plant_good_hour(tmp_path, BTC, floor_hour(now), count=2)
    plant_good_hour(tmp_path, BTC, floor_hour(now) - timedelta(hours=1), count=2)
    lake = lake_resource(tmp_path, compress_after_hours=0, closed_grace_minutes=61)
    assert compression_due(tmp_path, now, lake.compress_after, lake.grace, now=now) == []
    lake = lake_resource(tmp_path, compress_after_hours=0, closed_grace_minutes=0)
    assert compression_due(tmp_path, now, lake.compress_after, lake.grace, now=now) == [
        LakeHour(floor_hour(now) - timedelta(hours=1), BTC)]


def plant_retention_lake(data_dir, now: datetime) -> None:
    for offset in range(4):
        plant_good_hour(data_dir, BTC, h(offset), count=2, archived=offset != 1)
        write_parquet(data_dir, BTC, h(offset), now)
    write_events(data_dir, BTC, h(1), [event(BTC, "reconnect", h(1), reason="x")])  # next to hour 01's .jsonl


def test_retention_plan_at_chosen_times(tmp_path):
    plant_retention_lake(tmp_path, datetime.now(UTC))
    lake = lake_resource(tmp_path, curated_retention_days=7)
    at = h(24 * 5 + 2 + 1 / 6)  # hours ended by 02:10 five days earlier → 00 and 01
    plan = plan_deletions(tmp_path, at, lake.raw_retention, lake.curated_retention)
    assert [(c.kind, c.hour) for c in plan] == [("archive", h(0)), ("events", h(1)), ("records", h(1))]
    later = plan_deletions(tmp_path, h(24 * 7 + 1), lake.raw_retention, lake.curated_retention)
    assert [(c.kind, c.hour) for c in later if c.kind == "curated"] == [("curated", h(0))]
    assert len([c for c in later if c.kind != "curated"]) == 5  # all four raw hours (+ events)
    assert plan_deletions(tmp_path, h(24 * 5), lake.raw_retention, None) == []


def output_metadata(result) -> dict:
    (output,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return output.event_specific_data.metadata


def test_retention_schedule_run_and_dry_run(tmp_path, instance):
    plant_retention_lake(tmp_path, datetime.now(UTC))
    lake = lake_resource(tmp_path, curated_retention_days=7)
    at = h(24 * 5 + 2 + 1 / 6)
    request = evaluate(retention_schedule, lake, at)
    assert request.run_config["ops"]["delete_expired"]["config"] == {"as_of": "2026-11-25T02:10:00Z", "dry_run": False}
    planned = [str(c.path) for c in plan_deletions(tmp_path, at, lake.raw_retention, lake.curated_retention)]

    dry_config = {"ops": {"delete_expired": {"config": {"as_of": "2026-11-25T02:10:00Z", "dry_run": True}}}}
    dry = retention_job.execute_in_process(run_config=dry_config, instance=instance, resources={"lake": lake})
    assert dry.success and all(os.path.exists(p) for p in planned)
    dry_meta = output_metadata(dry)
    assert dry_meta["dry_run"].value is True and sorted(dry_meta["removed"].value) == sorted(planned)

    result = retention_job.execute_in_process(run_config=request.run_config, instance=instance,
                                              resources={"lake": lake})
    assert result.success
    assert not any(os.path.exists(p) for p in planned)
    assert layout.archive_path(tmp_path, BTC, h(2)).exists() and layout.curated_path(tmp_path, BTC, h(0)).exists()
    meta = output_metadata(result)
    assert sorted(meta["removed"].value) == sorted(planned) and meta["removed_count"].value == 3
    assert instance.get_run_by_id(result.run_id).tags["l2/removed"] == "3"
    assert isinstance(evaluate(retention_schedule, lake, at), SkipReason)  # idempotent


def test_deletion_refuses_paths_outside_the_root(tmp_path, instance):
    root = tmp_path / "lake"
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "precious.jsonl.gz"
    precious.write_bytes(b"keep me")
    plant_good_hour(root, BTC, h(0), count=2, archived=True)
    link = layout.archive_path(root, BTC, h(1))
    link.symlink_to(precious)  # an hour file that is a symlink out of the lake
    plant_good_hour(outside, "XRP-USDT-SWAP", h(0), count=2)  # a whole instrument dir linked in from outside
    (layout.raw_root(root) / "XRP-USDT-SWAP").symlink_to(layout.raw_root(outside) / "XRP-USDT-SWAP")
    lake = lake_resource(root)
    at = h(24 * 6)
    plan = plan_deletions(root, at, lake.raw_retention, None)
    report = delete_files(root, plan, dry_run=False)
    assert report.removed == [str(layout.archive_path(root, BTC, h(0)))]
    assert len(report.refused) == 2 and precious.read_bytes() == b"keep me"
    assert layout.records_path(outside, "XRP-USDT-SWAP", h(0)).exists()
    assert link.is_symlink()
    with pytest.raises(UnsafePath):
        check_inside_root(root, root / ".." / "outside" / "precious.jsonl.gz")
    with pytest.raises(UnsafePath):
        check_inside_root(root, root)
    run = retention_job.execute_in_process(
        run_config={"ops": {"delete_expired": {"config": {"as_of": "2026-11-26T00:00:00Z"}}}},
        instance=instance, resources={"lake": lake}, raise_on_error=False)
    assert not run.success and precious.read_bytes() == b"keep me"


def test_metadata_schedule_uses_scheduled_time():
    request = instrument_metadata_schedule(build_schedule_context(scheduled_execution_time=h(0.1)))
    assert request.run_key == "metadata-2026-11-20T00:06:00Z"
