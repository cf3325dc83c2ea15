"""Compression and retention schedules evaluated at chosen times, and the runs they launch."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
from datetime import UTC, datetime, timedelta

import pytest
from dagster import RunRequest, SkipReason, build_schedule_context

from l2_lake.format import layout
from l2_lake.tiers.curated import write_parquet
from l2_lake.tiers.retention import UnsafePath, check_inside_root, delete_files, plan_deletions
from l2_lake.tiers.selection import LakeHour, compression_due
from l2_pipeline.assets.lake import HOURS_PER_RUN
from l2_pipeline.jobs import retention_job
from l2_pipeline.keys import RAW_ARCHIVE
from l2_pipeline.partitions import instrument_keys, parse_partition_key, partition_key, run_batches
from l2_pipeline.schedules import instrument_metadata_schedule, retention_schedule
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    event,
    execute_ranged,
    lake_definitions,
    lake_resource,
    lake_schedule,
    ms,
    plant_good_hour,
    plant_live_hour,
    range_keys,
    write_events,
)


@pytest.fixture
def instance(persistent_instance):
    """A persistent instance (a schedule context needs one)."""
    return persistent_instance


def h(offset: float) -> datetime:
    return BASE_HOUR + timedelta(hours=offset)


def evaluate(schedule, lake, at: datetime, instance=None):
    with build_schedule_context(instance=instance, scheduled_execution_time=at, resources={"lake": lake}) as context:
        return schedule(context)


def plant_ten_hours(data_dir) -> dict:
    originals = {}
    for inst_id in (BTC, ETH):
        for offset in range(10):
            plant_good_hour(data_dir, inst_id, h(offset), count=5, archived=(inst_id, offset) == (BTC, 2))
            path = layout.records_path(data_dir, inst_id, h(offset))
            if path.exists():
                originals[(inst_id, offset)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return originals


def keys_of(requests: list[RunRequest], lake) -> list[str]:
    """Every partition the schedule's ranged runs cover, by hour then instrument."""
    keys = [key for request in requests for key in range_keys(request, lake)]
    assert len(keys) == len(set(keys))  # no partition in two runs
    return sorted(keys, key=lambda k: parse_partition_key(k)[::-1])


def test_compression_selects_exactly_the_due_hours(tmp_path, instance):
    plant_ten_hours(tmp_path)
    lake = lake_resource(tmp_path)
    at = h(10.25)  # 10:15 → hours that ended by 04:15 → 00..03 (BTC 02 already archived)
    requests = evaluate(lake_schedule(lake), lake, at, instance)
    assert isinstance(requests, list)
    expected = [(BTC, 0), (ETH, 0), (BTC, 1), (ETH, 1), (ETH, 2), (BTC, 3), (ETH, 3)]
    assert keys_of(requests, lake) == [str(partition_key(i, h(o))) for i, o in expected]
    # one run per contiguous range of an instrument's hours: BTC 00-01, ETH 00-03, BTC 03
    assert [(r.tags["l2/oldest"], r.tags["l2/newest"], r.tags["l2/hours"]) for r in requests] == [
        ("2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", "2"), ("2026-11-20T00:00:00Z", "2026-11-20T03:00:00Z", "4"),
        ("2026-11-20T03:00:00Z", "2026-11-20T03:00:00Z", "1")]
    assert all(r.run_key.startswith("compress-2026-11-20T10:15:00Z-") for r in requests)
    assert len({r.run_key for r in requests}) == 3
    # one minute earlier hour 03 had not been over for 6 h yet
    earlier = evaluate(lake_schedule(lake), lake, h(9.98), instance)
    assert len(keys_of(earlier, lake)) == 5
    assert isinstance(evaluate(lake_schedule(lake), lake, h(6.9), instance), SkipReason)
    # the boundary is inclusive: at 07:00 hour 00 (ended 01:00) is exactly 6 h old
    at_seven = evaluate(lake_schedule(lake), lake, h(7), instance)
    assert keys_of(at_seven, lake) == [str(partition_key(i, h(0))) for i in (BTC, ETH)]
    assert len(at_seven) == 1  # one hour of every instrument: one run


def test_late_tick_behaves_as_if_on_time(tmp_path, instance):
    plant_ten_hours(tmp_path)
    lake = lake_resource(tmp_path)
    # evaluated days after its scheduled time (wall clock is 2026-11-25+), it still selects as of 10:15
    assert compression_due(tmp_path, h(10.25), lake.compress_after, lake.grace) == compression_due(
        tmp_path, h(10.25), lake.compress_after, lake.grace, now=datetime.now(UTC))
    assert len(keys_of(evaluate(lake_schedule(lake), lake, h(10.25), instance), lake)) == 7


def test_compression_run_archives_and_is_idempotent(tmp_path, instance):
    originals = plant_ten_hours(tmp_path)
    lake = lake_resource(tmp_path)
    requests = evaluate(lake_schedule(lake), lake, h(10.25), instance)
    results = [execute_ranged(instance, lake, "compress_job", request.tags) for request in requests]
    assert all(result.success for result in results)
    archived = {(BTC, 0), (ETH, 0), (BTC, 1), (ETH, 1), (ETH, 2), (BTC, 3), (ETH, 3)}
    for (inst_id, offset), digest in originals.items():
        plain = layout.records_path(tmp_path, inst_id, h(offset))
        gz = layout.archive_path(tmp_path, inst_id, h(offset))
        if (inst_id, offset) in archived:
            assert not plain.exists()
            assert hashlib.sha256(gzip.decompress(gz.read_bytes())).hexdigest() == digest
        else:
            assert plain.exists() and not gz.exists()
    mats = [m for result in results for m in result.asset_materializations_for_node("raw_archive")]
    assert {m.partition for m in mats} == set(keys_of(requests, lake))
    assert all(m.asset_key == RAW_ARCHIVE and m.metadata["status"].value == "archived" for m in mats)
    assert instance.get_materialized_partitions(RAW_ARCHIVE) == set(keys_of(requests, lake))
    # the same tick again finds nothing; re-running the same runs changes nothing and succeeds: an
    # archived hour is there, so it materializes (status already_archived) instead of failing
    assert isinstance(evaluate(lake_schedule(lake), lake, h(10.25), instance), SkipReason)
    again = [execute_ranged(instance, lake, "compress_job", request.tags) for request in requests]
    statuses = {m.metadata["status"].value for r in again for m in r.asset_materializations_for_node("raw_archive")}
    assert all(r.success for r in again) and statuses == {"already_archived"}
    for (inst_id, offset), _ in originals.items():
        assert layout.records_path(tmp_path, inst_id, h(offset)).exists() == ((inst_id, offset) not in archived)


@pytest.mark.parametrize(("hours", "runs"), [(72, 2), (250, 6)])
def test_catch_up_after_days_in_one_tick(tmp_path, instance, hours, runs):
    """A catch-up of N hours per instrument is ceil(N / HOURS_PER_RUN) runs per instrument."""
    for inst_id in (BTC, ETH):
        for offset in range(-hours, 0):
            plant_good_hour(tmp_path, inst_id, h(offset), count=1)
    lake = lake_resource(tmp_path)
    requests = evaluate(lake_schedule(lake), lake, h(6), instance)
    assert len(keys_of(requests, lake)) == 2 * hours and len(requests) == runs
    assert max(int(r.tags["l2/hours"]) for r in requests) <= 100


def test_hours_that_are_not_partitions_are_left_alone(tmp_path, instance, capfd):
    plant_ten_hours(tmp_path)
    lake = lake_resource(tmp_path, partitions_start="2026-11-20-01:00")  # hour 00 is before the partitions
    schedule = lake_schedule(lake)  # loaded before SOL appears: SOL is not an instrument partition
    plant_good_hour(tmp_path, "SOL-USDT-SWAP", h(0), count=1)
    requests = evaluate(schedule, lake, h(10.25), instance)
    assert keys_of(requests, lake) == [str(partition_key(i, h(o))) for i, o in
                                                 [(BTC, 1), (ETH, 1), (ETH, 2), (BTC, 3), (ETH, 3)]]
    assert "3 due hour(s) are not raw_archive partitions" in capfd.readouterr().err


def test_open_hour_is_never_selected(tmp_path):
    now = datetime.now(UTC)
    current = layout.hour_floor(ms(now))
    plant_good_hour(tmp_path, BTC, current, count=2)
    plant_good_hour(tmp_path, BTC, current - timedelta(hours=1), count=2)
    lake = lake_resource(tmp_path, compress_after_hours=0, closed_grace_minutes=61)
    assert compression_due(tmp_path, now, lake.compress_after, lake.grace, now=now) == []
    lake = lake_resource(tmp_path, compress_after_hours=0, closed_grace_minutes=0)
    assert compression_due(tmp_path, now, lake.compress_after, lake.grace, now=now) == [
        LakeHour(current - timedelta(hours=1), BTC)]


def plant_retention_lake(data_dir, now: datetime) -> None:
    for offset in range(4):
        plant_good_hour(data_dir, BTC, h(offset), count=2, archived=offset != 1)
        write_parquet(data_dir, BTC, h(offset), now)
    write_events(data_dir, BTC, h(1), [event(BTC, "reconnect", h(1), reason="x")])  # next to hour 01's .jsonl
    plant_live_hour(data_dir, h(24 * 7 + 1))  # the collectors are live up to the latest time the tests use


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
    plant_live_hour(root, at)
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


def dagster_backfill_batches(keys: list[str], instance, lake) -> list[list[str]]:
    """The runs Dagster's asset backfill daemon makes of `keys` of raw_archive (its own function,
    `build_run_requests_with_backfill_policies`, with the asset's backfill policy)."""
    from dagster import partition_loading_context
    from dagster._core.definitions.automation_tick_evaluation_context import (
        build_run_requests_with_backfill_policies,
    )
    from dagster._core.definitions.events import AssetKeyPartitionKey

    graph = lake_definitions(lake).resolve_asset_graph()
    with partition_loading_context(dynamic_partitions_store=instance):
        requests = build_run_requests_with_backfill_policies(
            [AssetKeyPartitionKey(RAW_ARCHIVE, k) for k in keys], graph, instance)
    return sorted(range_keys(r, lake) for r in requests)


@pytest.mark.parametrize("seed", range(6))
def test_run_batches_are_the_backfill_daemons_runs(tmp_path, seed, instance):
    """`partitions.run_batches` (what compression_schedule requests) splits partitions into exactly
    the runs Dagster's backfill daemon makes of them, without listing every partition since the start."""
    rng = random.Random(seed)
    lake = lake_resource(tmp_path, instruments=[ETH, "SOL-USDT-SWAP", BTC, "XRP-USDT-SWAP"],
                         partitions_start="2026-11-01-00:00")
    order = instrument_keys(lake_definitions(lake).resolve_asset_graph().get(RAW_ARCHIVE).partitions_def)
    assert order == [BTC, ETH, "SOL-USDT-SWAP", "XRP-USDT-SWAP"]  # the static dimension's order (sorted)
    cases = {
        0: [(i, o) for i in order for o in range(-250, 0)],  # chunks of 100
        1: [(i, 3) for i in (ETH, BTC, "XRP-USDT-SWAP")],  # one hour: instrument ranges, SOL is a hole
        2: [(i, o) for i in (ETH, BTC) for o in (0, 1)],  # a tie: grouped by hour
    }
    cells = cases.get(seed) or [(i, o) for i in order for o in range(24) if rng.random() < 0.6]
    keys = [str(partition_key(i, h(o))) for i, o in cells]
    assert run_batches(keys, HOURS_PER_RUN, order) == dagster_backfill_batches(keys, instance, lake)
