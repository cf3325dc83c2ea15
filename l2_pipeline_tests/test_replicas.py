"""Redundant capture: the merge rules of `l2_lake.tiers.replicas.merge_hour` on planted replica spools,
the `canonical_hour` asset with its `replicas_agree` check and `replica_hours_sensor` on a real
Dagster instance, and a code location without replicas that is exactly what it was before."""

from __future__ import annotations

import fcntl
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from dagster import AssetCheckKey, build_sensor_context
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from l2_lake.format import layout
from l2_lake.format.hours import now_utc
from l2_lake.format.record import encode_line
from l2_lake.quality.verdicts import HOUR_CHECKS
from l2_lake.tiers.archive import OpenHourError, archive_hour
from l2_lake.tiers.replicas import ReplicaDataLost, merge_hour
from l2_pipeline.assets.replicas import CANONICAL_HOUR, REPLICAS_AGREE
from l2_pipeline.definitions import build_definitions
from l2_pipeline.keys import BOOK_FEATURES, CURATED_PARQUET, INSTRUMENT_METADATA, LAKE_HEALTH, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline.resources import lake_resource_from_env
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    event,
    lake_resource,
    make_record,
    make_records,
    materialize_named,
    ms,
    plant_good_hour,
    plant_live_hour,
    torn,
    write_hour,
)

HOUR = BASE_HOUR


def spools(tmp: Path) -> dict[str, Path]:
    return {"a": tmp / "spool-a", "b": tmp / "spool-b"}


def canonical_bytes(lake: Path, hour=HOUR) -> bytes:
    return layout.records_path(lake, BTC, hour).read_bytes()


def altered(record: dict) -> dict:
    """The same record (seqId, ts) with one size of its best bid changed: the replicas disagree."""
    bids = [list(level) for level in record["bids_top400"]]
    bids[0][1] = "9.99"
    return make_record(BTC, ms_of(record), seq=record["seqId"], bids=bids, asks=record["asks_top400"])


def ms_of(record: dict) -> int:
    from l2_lake.format.record import parse_ts_ms

    return parse_ts_ms(record["timestamp_utc"])


def plant_disagreement(replicas: dict[str, Path], hour, count: int = 10, at: int = 5) -> list[dict]:
    """Both replicas hold the same `count` records, except that b's record `at` has other levels."""
    records = make_records(BTC, hour, count=count)
    write_hour(replicas["a"], BTC, hour, records)
    write_hour(replicas["b"], BTC, hour, [altered(r) if i == at else r for i, r in enumerate(records)])
    return records


def test_merge_is_the_union_prefers_exact_records_and_tags_events(tmp_path):
    """a is down for records 40-59 and stops at 100, b starts at 20: the canonical hour has all 120, each
    shared record once; a's gap marker at 30 gives way to b's exact record there; b's own flagged
    record at 110 (only b has that timestamp) is kept as it is; b's torn tail is left out."""
    replicas, lake = spools(tmp_path), tmp_path / "lake"
    full = make_records(BTC, HOUR, count=120)
    marker = make_record(BTC, ms_of(full[30]), seq=full[30]["seqId"], gap=True, bids=full[29]["bids_top400"],
                         asks=full[29]["asks_top400"])
    flagged = make_record(BTC, ms_of(full[110]), seq=full[110]["seqId"], checksum_ok=False)
    a = [marker if r is full[30] else r for r in full[:40] + full[60:100]]
    b = [flagged if r is full[110] else r for r in full[20:]]
    events_a = [event(BTC, "reconnect", HOUR + timedelta(seconds=80), reason="closed", attempt=1, delay_s=0.2),
                event(BTC, "gap", HOUR + timedelta(seconds=61), expected=1, received=0, seqId=1030)]
    events_b = [event(BTC, "resync_done", HOUR + timedelta(seconds=70), how="ws_snapshot", seqId=9, reason="reconnect")]
    write_hour(replicas["a"], BTC, HOUR, a, events=events_a)
    write_hour(replicas["b"], BTC, HOUR, lines=[*map(encode_line, b), torn(encode_line(full[0]))], events=events_b)

    report = merge_hour(replicas, lake, BTC, HOUR)

    expected = [flagged if r is full[110] else r for r in full]
    assert canonical_bytes(lake) == b"".join(map(encode_line, expected))  # records copied byte for byte
    assert report.status == "merged" and report.records == 120
    assert report.agreed == 59  # shared exact timestamps 20-39 and 60-99, less 30 (a's is a gap marker)
    assert report.disagreements == 0 and report.flagged_superseded == 1 and report.seq_conflicts == 0
    assert report.close_pairs == 0
    table = report.replica_table()
    assert {r: (t["records"], t["only"], t["kept"], t["invalid_lines"]) for r, t in table.items()} == {
        "a": (80, 20, 79, 0), "b": (100, 40, 41, 1)}
    assert report.single_replica_records == 60
    meta = report.metadata()
    assert meta["replica_a_coverage_pct"] == round(100 * 80 / 1800, 3)
    assert meta["coverage_pct"] == round(100 * 120 / 1800, 3)
    assert table["b"]["share_pct"] == round(100 * 100 / 120, 3)
    assert meta["replica_fingerprint"].startswith("a=00.jsonl:") and "|b=00.jsonl:" in meta["replica_fingerprint"]
    assert "torn last line" in (report.warning or "")
    events = [orjson.loads(line) for line in layout.events_path(lake, BTC, HOUR).read_bytes().splitlines()]
    assert [(e["type"], e["replica"]) for e in events] == [("gap", "a"), ("resync_done", "b"), ("reconnect", "a")]
    assert list(events[0])[-1] == "replica" and events[0]["seqId"] == 1030  # the replica's fields kept, one added


def test_a_disagreement_keeps_the_first_replica_and_is_reported(tmp_path):
    replicas, lake = spools(tmp_path), tmp_path / "lake"
    records = plant_disagreement(replicas, HOUR)
    clash = make_record(BTC, ms_of(records[7]), seq=records[7]["seqId"] + 500)  # same ts, another seqId
    lines = layout.records_path(replicas["a"], BTC, HOUR).read_bytes().splitlines(keepends=True)
    lines[7] = encode_line(clash)
    layout.records_path(replicas["a"], BTC, HOUR).write_bytes(b"".join(lines))

    report = merge_hour(replicas, lake, BTC, HOUR)
    assert (report.records, report.agreed, report.disagreements, report.seq_conflicts) == (10, 8, 1, 1)
    (example,) = report.disagreement_examples
    assert f"seqId={records[5]['seqId']}: bids of replica a and replica b differ (kept a's)" in example
    assert canonical_bytes(lake).splitlines(keepends=True)[5] == encode_line(records[5])
    assert canonical_bytes(lake).splitlines(keepends=True)[7] == encode_line(clash)  # a listed first
    assert "differ between replicas" in (report.warning or "")

    reversed_order = merge_hour({"b": replicas["b"], "a": replicas["a"]}, tmp_path / "lake2", BTC, HOUR)
    assert reversed_order.disagreements == 1
    assert canonical_bytes(tmp_path / "lake2").splitlines(keepends=True)[5] == encode_line(altered(records[5]))


def test_ticks_straddling_a_message_keep_both_records(tmp_path):
    """a wrote the book at one message, b at the next one 100 ms later in the same cadence slot: both
    are exact states of the book, both are kept, and `close_pairs` says so."""
    replicas, lake = spools(tmp_path), tmp_path / "lake"
    records = make_records(BTC, HOUR, count=4)
    later = make_record(BTC, ms_of(records[2]) + 100, seq=records[2]["seqId"] + 1)
    write_hour(replicas["a"], BTC, HOUR, records)
    write_hour(replicas["b"], BTC, HOUR, [*records[:2], later, records[3]])
    report = merge_hour(replicas, lake, BTC, HOUR)
    assert (report.records, report.agreed, report.close_pairs, report.seq_conflicts) == (5, 3, 1, 0)
    assert canonical_bytes(lake) == b"".join(map(encode_line, [*records[:3], later, records[3]]))


def test_merge_is_idempotent_keeps_archived_hours_and_never_loses_records(tmp_path):
    replicas, lake = spools(tmp_path), tmp_path / "lake"
    records = make_records(BTC, HOUR, count=50)
    write_hour(replicas["a"], BTC, HOUR, records[:30])
    write_hour(replicas["b"], BTC, HOUR, records[10:40], archived=True)  # a replica's archive is read too
    first = merge_hour(replicas, lake, BTC, HOUR)
    assert first.status == "merged" and first.records == 40
    assert first.replicas[1].source == layout.archive_path(replicas["b"], BTC, HOUR)
    path = layout.records_path(lake, BTC, HOUR)
    stamp = path.stat().st_mtime_ns
    again = merge_hour(replicas, lake, BTC, HOUR)
    assert again.status == "unchanged" and path.stat().st_mtime_ns == stamp  # nothing touched
    assert not layout.events_path(lake, BTC, HOUR).exists()  # no replica has events: none written

    assert archive_hour(lake, BTC, HOUR, now_utc()).status == "archived"
    assert merge_hour(replicas, lake, BTC, HOUR).status == "unchanged" and not path.exists()
    write_hour(replicas["a"], BTC, HOUR, records[:30] + records[45:])  # a spool synced late: 5 more records
    later = merge_hour(replicas, lake, BTC, HOUR)
    assert later.status == "merged" and later.records == 45
    assert path.read_bytes() == b"".join(map(encode_line, records[:40] + records[45:]))

    write_hour(replicas["a"], BTC, HOUR, records[:5])  # a spool cleaned (5-9, 45-49 gone): the canonical hour is kept
    with pytest.raises(ReplicaDataLost, match="holds 10 record"):
        merge_hour(replicas, lake, BTC, HOUR)
    assert path.read_bytes() == b"".join(map(encode_line, records[:40] + records[45:]))


def test_merge_refuses_the_open_hour_the_lake_as_a_replica_and_a_running_collector(tmp_path):
    replicas, lake = spools(tmp_path), tmp_path / "lake"
    current = now_utc().replace(minute=0, second=0, microsecond=0)
    write_hour(replicas["a"], BTC, current, make_records(BTC, current, count=3))
    with pytest.raises(OpenHourError, match="not closed yet"):
        merge_hour(replicas, lake, BTC, current)
    assert merge_hour(replicas, lake, BTC, current, allow_open=True).records == 3  # tests and operators
    with pytest.raises(ValueError, match="is the lake itself"):
        merge_hour({"a": lake, "b": replicas["b"]}, lake, BTC, HOUR)
    with open(lake / ".l2-collector.lock", "a") as held:  # a collector running in the lake
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="a collector is running in"):
            merge_hour(replicas, lake, BTC, current, allow_open=True)
    assert merge_hour(replicas, lake, BTC, HOUR).status == "no_data"  # released: merges again (nothing there)


def test_replica_dirs_setting(tmp_path):
    lake = lake_resource_from_env({"L2_REPLICA_DIRS": " a=/srv/spool-a , host-b=/srv/spool-b"})
    assert lake.replicas == {"a": Path("/srv/spool-a"), "host-b": Path("/srv/spool-b")}
    assert lake_resource_from_env({}).replicas == {}
    for bad, message in (("a", "is not id=/path"), ("A=/x", "replica id 'A'"), ("a=/x,a=/y", "given twice"),
                         ("a=/x,b=/x", "given for two replicas"), ("a=", "is not id=/path")):
        with pytest.raises(ValueError, match=f"L2_REPLICA_DIRS={bad!r}.*{message}"):
            lake_resource_from_env({"L2_REPLICA_DIRS": bad})
    write_hour(tmp_path / "spool", "SOL-USDT-SWAP", HOUR, make_records("SOL-USDT-SWAP", HOUR, count=1))
    with_spool = lake_resource(tmp_path / "lake", replica_dirs=f"a={tmp_path / 'spool'}")
    assert "SOL-USDT-SWAP" in with_spool.known_instruments()  # a replica's instruments are partitions too


def test_without_replicas_the_code_location_is_unchanged(tmp_path):
    defs = build_definitions(lake_resource(tmp_path))
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {RAW_HOUR, RAW_ARCHIVE, CURATED_PARQUET, BOOK_FEATURES, INSTRUMENT_METADATA,
                                          LAKE_HEALTH}
    assert graph.get(RAW_HOUR).parent_keys == set()
    assert {k.name for k in graph.asset_check_keys} == {*HOUR_CHECKS, "collector_freshness"}
    repo = defs.get_repository_def()
    assert {s.name for s in repo.sensor_defs} == {"raw_hours_sensor", "collector_freshness_sensor",
                                                  "lake_health_sensor"}
    assert {s.name for s in repo.schedule_defs} == {"compression_schedule", "retention_schedule",
                                                    "instrument_metadata_schedule", "instance_retention_schedule"}


def replica_tick(defs, instance, lake, cursor: str | None = None):
    sensor = defs.resolve_sensor_def("replica_hours_sensor")
    return sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}))


def requested(result) -> dict[str, set[str]]:
    if not result.run_requests:
        return {}
    (request,) = result.run_requests
    subsets = request.asset_graph_subset.partitions_subsets_by_asset_key
    return {key.to_user_string(): set(subset.get_partition_keys()) for key, subset in subsets.items()}


def plant_split_and_disagreeing_hours(replicas: dict[str, Path]) -> tuple[datetime, datetime, list[dict]]:
    """BTC's hour `good` split between the replicas (a: records 0-19, b: 10-29; 10 shared) and hour
    `bad` where they disagree on one record: (good, bad, good's 30 records)."""
    good, bad = HOUR, HOUR + timedelta(hours=1)
    records = make_records(BTC, good, count=30)
    write_hour(replicas["a"], BTC, good, records[:20])
    write_hour(replicas["b"], BTC, good, records[10:])
    plant_disagreement(replicas, bad)
    return good, bad, records


def tick_and_merge(defs, instance, lake, good_key: str, bad_key: str):
    """replica_hours_sensor's first tick, which must request both partitions of every asset it names,
    then one ranged run of canonical_hour, replicas_agree and raw_hour over them (it succeeds: a failed
    check does not fail the run): (the tick, (asset, partition) → metadata, partition → replicas_agree)."""
    first = replica_tick(defs, instance, lake)
    both = {good_key, bad_key}
    assert requested(first) == {"canonical_hour": both, "raw_hour": both, "curated_parquet": both,
                                "book_features": both}
    result = materialize_named(
        lake, ["canonical_hour", "replicas_agree_check", "raw_hour"], instance=instance,
        resources={"lake": lake}, tags={ASSET_PARTITION_RANGE_START_TAG: good_key,
                                        ASSET_PARTITION_RANGE_END_TAG: bad_key})
    assert result.success
    metas = {(e.asset_key, e.materialization.partition): e.materialization.metadata
             for e in result.get_asset_materialization_events()}
    evaluations = {e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == REPLICAS_AGREE}
    return first, metas, evaluations


def test_canonical_hour_asset_check_and_sensor_on_an_instance(tmp_path, dagster_instances):
    """Two closed hours in two spools: the sensor requests canonical_hour and raw_hour (and the Parquet
    tiers) for both; one ranged run merges them, evaluates replicas_agree for each (fails where the
    replicas disagree) and raw_hour reads the canonical files; the next tick passes over both, until a
    replica's file changes."""
    replicas = spools(tmp_path)
    good, bad, records = plant_split_and_disagreeing_hours(replicas)
    lake = lake_resource(tmp_path / "lake", instruments=[BTC],
                         replica_dirs=",".join(f"{rid}={path}" for rid, path in replicas.items()))
    defs = build_definitions(lake)
    graph = defs.resolve_asset_graph()
    assert graph.get(RAW_HOUR).parent_keys == {CANONICAL_HOUR}
    assert AssetCheckKey(CANONICAL_HOUR, REPLICAS_AGREE) in graph.asset_check_keys
    good_key, bad_key = str(partition_key(BTC, good)), str(partition_key(BTC, bad))
    with dagster_instances.persistent(tmp_path / "home") as instance:  # persistent, like a deployment's
        first, metas, evaluations = tick_and_merge(defs, instance, lake, good_key, bad_key)
        merged = metas[(CANONICAL_HOUR, good_key)]
        assert (merged["records"].value, merged["agreed"].value, merged["disagreements"].value) == (30, 10, 0)
        assert merged["replica_a_records"].value == 20 and merged["replica_b_only"].value == 10
        assert merged["replicas"].value["b"]["share_pct"] == round(100 * 20 / 30, 3)
        assert metas[(RAW_HOUR, good_key)]["records"].value == 30  # raw_hour reads the canonical hour
        assert metas[(CANONICAL_HOUR, bad_key)]["disagreements"].value == 1
        assert set(evaluations) == {good_key, bad_key}
        assert evaluations[good_key].passed and not evaluations[bad_key].passed
        assert evaluations[bad_key].severity.value == "ERROR" and "1 record(s)" in evaluations[bad_key].description
        assert evaluations[bad_key].target_materialization_data is not None

        second = replica_tick(defs, instance, lake, first.cursor)
        assert requested(second) == {} and "2 unchanged" in second.skip_reason.skip_message
        write_hour(replicas["b"], BTC, good, [*records[10:], make_record(BTC, ms(good) + 3_000_000, seq=1)])
        third = replica_tick(defs, instance, lake, second.cursor)
        assert requested(third)["canonical_hour"] == {good_key}


def test_replicas_in_instrument_groups_merge_and_check_each_member(tmp_path, dagster_instances):
    """BTC and ETH in one group: a group-hour merges each member a replica holds, its replicas_agree
    fails naming BTC (whose replicas disagree), and a change in one member's replica file merges its
    group-hour again."""
    replicas = spools(tmp_path)
    good, bad, _ = plant_split_and_disagreeing_hours(replicas)
    for hour in (good, bad):
        plant_good_hour(replicas["a"], ETH, hour, count=12)
    lake = lake_resource(tmp_path / "lake", instruments=[BTC, ETH], instrument_groups=1,
                         replica_dirs=",".join(f"{rid}={path}" for rid, path in replicas.items()))
    defs = build_definitions(lake)
    good_key, bad_key = str(partition_key(BTC, good, 1)), str(partition_key(ETH, bad, 1))
    with dagster_instances.persistent(tmp_path / "home") as instance:
        first, metas, evaluations = tick_and_merge(defs, instance, lake, good_key, bad_key)
        merged = metas[(CANONICAL_HOUR, good_key)]
        assert merged["instrument_ids"].value == f"{BTC}, {ETH}" and merged["records"].value == 30 + 12
        assert merged["by_instrument"].value[BTC]["replica_b_only"] == 10
        assert metas[(RAW_HOUR, good_key)]["by_instrument"].value[ETH]["records"] == 12
        assert metas[(CANONICAL_HOUR, bad_key)]["disagreements"].value == 1
        assert evaluations[good_key].passed and not evaluations[bad_key].passed
        assert evaluations[bad_key].description.startswith(f"1 of 2 instrument(s) fail: {BTC}: 1 record(s)")
        assert evaluations[bad_key].metadata["failed_instruments"].value == BTC

        second = replica_tick(defs, instance, lake, first.cursor)
        assert requested(second) == {} and "4 unchanged" in second.skip_reason.skip_message
        plant_good_hour(replicas["b"], ETH, good, count=12)
        third = replica_tick(defs, instance, lake, second.cursor)
        assert requested(third)["canonical_hour"] == {good_key}


def agreement_status(instance, lake_dir: Path, replicas: dict[str, Path]) -> dict[str, set[str]]:
    """status (SUCCEEDED, FAILED, …) → partitions of `replicas_agree`, as Dagster's UI computes check health."""
    from dagster._core.storage.asset_check_state import AssetCheckState, bulk_update_asset_check_state

    lake = lake_resource(lake_dir, instruments=[BTC], replica_dirs=",".join(f"{r}={p}" for r, p in replicas.items()))
    partitions = build_definitions(lake).resolve_asset_graph().get(CANONICAL_HOUR).partitions_def
    check = AssetCheckKey(CANONICAL_HOUR, REPLICAS_AGREE)
    states = bulk_update_asset_check_state(instance, [(check, partitions)], {check: AssetCheckState.empty()})
    return {status.value: set(subset.subset_value.get_partition_keys())
            for status, subset in states[check].subsets.items() if not subset.is_empty}


def test_daemons_merge_register_and_check_replica_hours(tmp_path, monkeypatch, dagster_instances):
    """The deployment's flow: the sensor daemon ticks `replica_hours_sensor` of the code location
    loaded from the environment (L2_REPLICA_DIRS), the backfill daemon runs its backfill (canonical_hour
    and raw_hour in order, their checks evaluated per hour), and on the next tick `raw_hours_sensor`
    finds the canonical hours in the lake already registered: no second registration."""
    from datetime import UTC, datetime

    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.scheduler.instigation import TickStatus

    from l2_pipeline_tests.lake_factory import NO_FIGURES, backfill_partitions, run_backfill, sensor_daemon_tick

    replicas = spools(tmp_path)
    hours = [HOUR, HOUR + timedelta(hours=1)]
    for hour in hours:
        records = make_records(BTC, hour, count=20)
        write_hour(replicas["a"], BTC, hour, records[:15])
        write_hour(replicas["b"], BTC, hour, records[5:])
    lake_dir = tmp_path / "lake"
    env = {"L2_DATA_DIR": str(lake_dir), "L2_INSTRUMENTS": BTC, "L2_CURATE_ON_REGISTER": "false", **NO_FIGURES,
           "L2_REPLICA_DIRS": ",".join(f"{rid}={path}" for rid, path in replicas.items())}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # read by the code server the daemon starts and the runs it launches
    keys = {str(partition_key(BTC, hour)) for hour in hours}
    with dagster_instances.daemon_workspace(tmp_path / "dagster_home") as (instance, workspace):
        start = datetime.now(UTC)
        tick, _ = sensor_daemon_tick(instance, workspace, start, sensor="replica_hours_sensor")
        assert tick.status == TickStatus.SUCCESS, tick.error
        (backfill,) = instance.get_backfills()
        assert backfill_partitions(backfill) == {"canonical_hour": keys, "raw_hour": keys}
        assert run_backfill(instance, workspace, backfill.backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
        for hour in hours:
            assert len(layout.records_path(lake_dir, BTC, hour).read_bytes().splitlines()) == 20
        assert {r.partition_key for r in instance.fetch_materializations(RAW_HOUR, limit=10).records} == keys
        assert agreement_status(instance, lake_dir, replicas) == {"SUCCEEDED": keys}  # the partitions' check health

        later = start + timedelta(minutes=2)
        raw_tick, _ = sensor_daemon_tick(instance, workspace, later, sensor="raw_hours_sensor")
        assert raw_tick.status == TickStatus.SKIPPED and "2 unchanged" in raw_tick.skip_reason, raw_tick.error
        merge_tick, _ = sensor_daemon_tick(instance, workspace, later, sensor="replica_hours_sensor")
        assert merge_tick.status == TickStatus.SKIPPED and "2 unchanged" in merge_tick.skip_reason
        assert len(instance.get_backfills()) == 1  # nothing registered or merged twice


def test_retention_also_empties_the_replica_spools(tmp_path, dagster_instances):
    from l2_pipeline.jobs import retention_job

    replicas = spools(tmp_path)
    lake_dir = tmp_path / "lake"
    old, recent = HOUR, HOUR + timedelta(days=2)
    for directory in (*replicas.values(), lake_dir):
        for hour in (old, recent):
            plant_good_hour(directory, BTC, hour, count=3)
        plant_live_hour(directory, old + timedelta(days=5, hours=1))  # each collector is live
    lake = lake_resource(lake_dir, replica_dirs=",".join(f"{rid}={d}" for rid, d in replicas.items()))
    as_of = (old + timedelta(days=5, hours=1, minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with dagster_instances.ephemeral() as instance:
        run = retention_job.execute_in_process(run_config={"ops": {"delete_expired": {"config": {"as_of": as_of}}}},
                                               instance=instance, resources={"lake": lake})
    assert run.success
    for directory in (*replicas.values(), lake_dir):
        assert not layout.records_path(directory, BTC, old).exists()
        assert layout.records_path(directory, BTC, recent).exists()
