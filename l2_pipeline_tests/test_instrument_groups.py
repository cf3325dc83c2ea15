"""Hour × instrument-group partitions (`L2_INSTRUMENT_GROUPS`): the keys, what a group-hour records
and how its checks judge its members, and a lake of five instruments in two groups registered,
checked, drawn, re-registered and archived through the real sensor, schedule and jobs."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckKey, MetadataValue, build_schedule_context, materialize

from l2_lake.format import layout
from l2_lake.quality.verdicts import COVERAGE, HOUR_CHECKS, NO_GAPS, Verdict, group_verdicts
from l2_pipeline.definitions import checked_partitions_warning, partitions_at_load
from l2_pipeline.group_hours import group_metadata, member_metadata
from l2_pipeline.keys import LAKE_HEALTH, RAW_HOUR
from l2_pipeline.partitions import (
    group_key,
    group_keys,
    group_members,
    instrument_groups,
    instrument_keys,
    lake_partitions,
    parse_group_key,
    parse_partition_key,
    partition_key,
    run_batches,
)
from l2_pipeline_tests.lake_factory import (
    BTC,
    ETH,
    SOL,
    append_record,
    check_status,
    execute_ranged,
    hour_at,
    hours_drawn_after,
    lake_assets,
    lake_resource,
    lake_schedule,
    latest_raw_hour,
    make_records,
    plant_good_hour,
    range_keys,
    register_closed_hours,
    requested,
    with_gap,
    write_hour,
)

DOGE = "DOGE-USDT-SWAP"
ADA = "ADA-USDT-SWAP"  # appears after the code location loaded
GROUPS = 2
COUNT = 180
RECENT = layout.hour_floor(int(datetime.now(UTC).timestamp() * 1000)) - 3 * layout.HOUR  # inside lake_health's day


def hour_of(h: int) -> datetime:
    """Hour `h` of the grouped lake: recent enough for the heatmap's window, long closed."""
    return RECENT + h * layout.HOUR


def test_group_keys_are_stable_and_parse_back():
    assert group_keys(10)[0] == "group-0-of-10" and group_keys(10)[-1] == "group-9-of-10"
    assert group_keys(12)[3] == "group-03-of-12"
    assert group_key(BTC, 10) == f"group-{zlib.crc32(BTC.encode()) % 10}-of-10"
    assert all(parse_group_key(key) == (i, 12) for i, key in enumerate(group_keys(12)))
    for not_a_group in (BTC, "group-3-of-12", "group-12-of-12", "group-x-of-2", ""):
        assert parse_group_key(not_a_group) is None
    with pytest.raises(ValueError, match="1 to 1000"):
        group_keys(0)
    everyone = [BTC, ETH, SOL, DOGE, ADA]
    members = {key: group_members(key, everyone) for key in group_keys(GROUPS)}
    assert sorted(i for m in members.values() for i in m) == sorted(everyone)  # each in exactly one group
    assert all(group_key(i, GROUPS) == key for key, m in members.items() for i in m)
    assert group_members(BTC, []) == [BTC]


def test_grouped_partitions_and_their_runs():
    partitions = lake_partitions(hour_at(0), [BTC], groups=GROUPS)
    assert instrument_groups(partitions) == GROUPS and instrument_groups(lake_partitions(hour_at(0), [BTC])) == 0
    key = str(partition_key(ETH, hour_at(3), GROUPS))
    assert key == f"2026-11-20-03:00|{group_key(ETH, GROUPS)}"
    assert parse_partition_key(key) == (group_key(ETH, GROUPS), hour_at(3))
    keys = [str(partition_key(i, hour_at(h), GROUPS)) for i in (BTC, SOL) for h in range(5)]
    batches = run_batches(keys, 4, group_keys(GROUPS))
    assert sorted(k for b in batches for k in b) == sorted(keys) and max(map(len, batches)) == 4


def verdict(name: str, passed: bool, text: str, warn: bool = False) -> Verdict:
    return Verdict(name, passed, warn, text, {"gaps": 0 if passed else 2})


def test_a_group_verdict_names_each_failing_member():
    combined = group_verdicts({
        BTC: [verdict(NO_GAPS, False, "2 gap(s)", warn=True), verdict(COVERAGE, True, "99%")],
        ETH: [verdict(NO_GAPS, True, "0 gap(s)", warn=True), verdict(COVERAGE, True, "98%")],
        SOL: [verdict("schema_valid", False, "cannot read the hour")],  # unreadable: judged by schema_valid only
    })
    by_name = {v.check_name: v for v in combined}
    assert set(by_name) == {NO_GAPS, COVERAGE, "schema_valid"}
    gaps = by_name[NO_GAPS]
    assert (gaps.passed, gaps.warn, gaps.description) == (False, True, f"1 of 2 instrument(s) fail: {BTC}: 2 gap(s)")
    assert gaps.metadata["failed_instruments"] == BTC and gaps.metadata["by_instrument"][ETH]["passed"]
    assert by_name[COVERAGE].passed and by_name[COVERAGE].description == "all 2 instrument(s) pass"
    assert not by_name["schema_valid"].passed and SOL in by_name["schema_valid"].description


def test_group_metadata_sums_counts_and_keeps_each_member():
    meta = group_metadata({
        BTC: {"records": 10, "coverage_pct": 99.5, "first_ts": 5.0, "last_ts": 9.0, "quality": "FAILED: no_gaps",
              "fingerprint": "a", "path": MetadataValue.path("/lake/btc"), "figure": MetadataValue.md("![x](y)")},
        ETH: {"records": 7, "coverage_pct": 80.0, "first_ts": 4.0, "last_ts": 8.0, "quality": "passed (6 checks)",
              "fingerprint": "b", "path": MetadataValue.path("/lake/eth")},
    })
    assert (meta["instruments"], meta["records"], meta["coverage_pct"]) == (2, 17, 80.0)
    assert (meta["first_ts"], meta["last_ts"], meta["quality"], meta["failed_instruments"]) == \
        (4.0, 9.0, "FAILED: no_gaps", BTC)
    assert "fingerprint" not in meta and "path" not in meta and f"figure {BTC}" in meta
    assert meta["members"].value.splitlines()[2] == f"| {BTC} | FAILED: no_gaps | 10 | 99.5 |"
    assert member_metadata(meta, ETH) == {"records": 7, "coverage_pct": 80.0, "first_ts": 4.0, "last_ts": 8.0,
                                          "quality": "passed (6 checks)", "fingerprint": "b", "path": "/lake/eth"}
    assert member_metadata(meta, SOL) is None
    assert member_metadata({"records": 3}, BTC) == {"records": 3}  # an instrument's own partition


def check_evaluations(instance, check: str) -> dict[str, object]:
    """partition → the latest evaluation of the hour check `check`."""
    records = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(RAW_HOUR, check), limit=100)
    out = {}
    for record in sorted(records, key=lambda r: r.id):
        evaluation = record.event.dagster_event.event_specific_data
        out[evaluation.partition] = evaluation
    return out


@pytest.fixture
def grouped_lake(tmp_path):
    """Five instruments in two groups over two closed hours: BTC has a gap in hour 0, SOL too few
    records in hour 1, DOGE only hour 1."""
    root = tmp_path / "lake"
    for inst_id in (BTC, ETH, SOL):
        for h in (0, 1):
            if (inst_id, h) == (BTC, 0):
                records, events = with_gap(make_records(BTC, hour_of(0), count=COUNT), 50, BTC, hour_of(0))
                write_hour(root, BTC, hour_of(0), records, events=events)
            else:
                plant_good_hour(root, inst_id, hour_of(h), count=20 if (inst_id, h) == (SOL, 1) else COUNT)
    plant_good_hour(root, DOGE, hour_of(1), count=COUNT)
    lake = lake_resource(root, instruments=[BTC, ETH, SOL, DOGE], instrument_groups=GROUPS, coverage_threshold_pct=5,
                         health_days=1)
    return root, lake


def test_a_grouped_lake_is_registered_checked_and_drawn_per_instrument(grouped_lake, instance):
    root, lake = grouped_lake
    tick = register_closed_hours(instance, lake)
    key = {(i, h): str(partition_key(i, hour_of(h), GROUPS)) for i in (BTC, ETH, SOL, DOGE, ADA) for h in (0, 1)}
    assert requested(tick)["raw_hour"] == {key[BTC, 0], key[BTC, 1], key[SOL, 0], key[SOL, 1]}
    assert key[BTC, 0] == key[ETH, 0] == key[DOGE, 0] != key[SOL, 0]

    hour0 = latest_raw_hour(instance, key[BTC, 0]).metadata
    assert hour0["instrument_ids"].value == f"{BTC}, {ETH}"  # DOGE has no file of hour 0: not a member
    assert hour0["records"].value == 2 * COUNT and hour0["gaps"].value == 1
    assert member_metadata(hour0, BTC)["gaps"] == 1 and member_metadata(hour0, ETH)["gaps"] == 0
    hour1 = latest_raw_hour(instance, key[BTC, 1]).metadata
    assert hour1["instrument_ids"].value == f"{BTC}, {DOGE}, {ETH}" and hour1["records"].value == 3 * COUNT
    for inst_id, h in key:
        if inst_id != ADA and (inst_id, h) != (DOGE, 0):  # every member's Parquet was written from the one read
            rows = pq.read_table(layout.curated_path(root, inst_id, hour_of(h))).num_rows
            assert rows == (20 if (inst_id, h) == (SOL, 1) else COUNT)

    status = check_status(instance, lake)
    assert status[NO_GAPS] == {"FAILED": {key[BTC, 0]}, "SUCCEEDED": {key[BTC, 1], key[SOL, 0], key[SOL, 1]}}
    assert status[COVERAGE]["FAILED"] == {key[SOL, 1]}
    assert all(status[c] == {"SUCCEEDED": set(key[i, h] for i in (BTC, SOL) for h in (0, 1))}
               for c in HOUR_CHECKS if c not in (NO_GAPS, COVERAGE))
    gaps = check_evaluations(instance, NO_GAPS)[key[BTC, 0]]
    assert gaps.description.startswith(f"1 of 2 instrument(s) fail: {BTC}: 1 gap(s)")
    assert gaps.metadata["failed_instruments"].value == BTC
    assert f"| {BTC} | False | 1 gap(s) |" in gaps.metadata["members"].value  # each member's outcome, as a table
    coverage = check_evaluations(instance, COVERAGE)[key[SOL, 1]]
    assert coverage.metadata["failed_instruments"].value == SOL

    done = materialize([lake_assets(lake)["lake_health"]], instance=instance, resources={"lake": lake})
    assert done.success
    health = instance.get_latest_materialization_event(LAKE_HEALTH).asset_materialization.metadata
    # one cell per instrument-hour: BTC 0 warns (a gap), SOL 1 fails (coverage); missing: DOGE 0 and the
    # hours after hour 1 (the window runs to the last closed hour)
    assert (health["warning"].value, health["failed"].value, health["passed"].value) == (1, 1, 5)
    assert health["missing"].value == 1 + 4 * hours_drawn_after(health, hour_of(1))
    assert health["instruments"].value == 4


def test_a_changed_member_or_a_new_instrument_registers_its_group_hour_again(grouped_lake, instance):
    root, lake = grouped_lake
    first = register_closed_hours(instance, lake)
    append_record(root, ETH, hour_of(0))  # ETH's hour 0 changes: its group-hour is registered again
    plant_good_hour(root, ADA, hour_of(1), count=COUNT)  # a new instrument joins its group, no reload needed
    again = register_closed_hours(instance, lake, cursor=None)
    assert set(requested(again)["raw_hour"]) == {str(partition_key(ETH, hour_of(0), GROUPS)),
                                                  str(partition_key(ADA, hour_of(1), GROUPS))}
    hour0 = latest_raw_hour(instance, str(partition_key(ETH, hour_of(0), GROUPS))).metadata
    assert member_metadata(hour0, ETH)["records"] == COUNT + 1
    with_ada = latest_raw_hour(instance, str(partition_key(ADA, hour_of(1), GROUPS))).metadata
    assert ADA in with_ada["instrument_ids"].value.split(", ")
    assert first.cursor != again.cursor


def test_the_compression_schedule_archives_every_member_of_a_group_hour(grouped_lake, instance):
    root, lake = grouped_lake
    register_closed_hours(instance, lake)
    schedule = lake_schedule(lake)
    as_of = hour_of(2) + timedelta(hours=lake.compress_after_hours, minutes=5)
    requests = schedule.evaluate_tick(build_schedule_context(instance=instance, resources={"lake": lake},
                                                             scheduled_execution_time=as_of)).run_requests
    keys = [key for request in requests for key in range_keys(request, lake)]
    assert sorted(keys) == sorted({str(partition_key(i, hour_of(h), GROUPS)) for i in (BTC, SOL) for h in (0, 1)})
    for request in requests:
        assert execute_ranged(instance, lake, "compress_job", request.tags).success
    members = [(i, h) for i in (BTC, ETH, SOL) for h in (0, 1)] + [(DOGE, 1)]
    for inst_id, h in members:
        assert layout.archive_path(root, inst_id, hour_of(h)).exists()
        assert not layout.records_path(root, inst_id, hour_of(h)).exists()


def test_many_instruments_without_groups_are_warned_about_at_load(tmp_path, caplog):
    many = [f"C{i:02d}-USDT-SWAP" for i in range(30)]
    with caplog.at_level("WARNING", logger="l2_pipeline.definitions"):
        partitions = partitions_at_load(lake_resource(tmp_path, instruments=many))
    assert len(instrument_keys(partitions)) == 30 and "= 21,600 checked partitions per check" in caplog.text
    assert "L2_INSTRUMENT_GROUPS=5 before the first registration" in caplog.text  # 5 × 24 × 30 = 3,600
    caplog.clear()
    with caplog.at_level("WARNING", logger="l2_pipeline.definitions"):
        grouped = partitions_at_load(lake_resource(tmp_path, instruments=many, instrument_groups=5))
    assert instrument_keys(grouped)[-1] == "group-4-of-5" and not caplog.text
    assert checked_partitions_warning(2, 30) is None  # the demo's two instruments
    assert "L2_INSTRUMENT_GROUPS=1" in checked_partitions_warning(1, 200)  # a window too long even for one group


def test_switching_to_groups_registers_the_lake_again_under_group_keys(grouped_lake, instance):
    """An operator who grew past the per-instrument budget sets L2_INSTRUMENT_GROUPS and resets the
    sensor's cursor: every hour is registered again under its group's key, with its checks."""
    _, grouped = grouped_lake
    per_instrument = grouped.model_copy(update={"instrument_groups": 0})
    first = register_closed_hours(instance, per_instrument)
    assert str(partition_key(BTC, hour_of(0))) in requested(first)["raw_hour"]
    again = register_closed_hours(instance, grouped, cursor=None)  # the reset cursor, after the reload
    keys = {str(partition_key(i, hour_of(h), GROUPS)) for i in (BTC, SOL) for h in (0, 1)}
    assert requested(again)["raw_hour"] == keys
    assert all(latest_raw_hour(instance, key) is not None for key in keys)
    assert check_status(instance, grouped)[COVERAGE]["FAILED"] == {str(partition_key(SOL, hour_of(1), GROUPS))}
