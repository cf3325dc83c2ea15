"""The code location loads and validates, and its assets and partitioned checks run on a real
instance (`dagster_instances.ephemeral()`: in memory, or on PostgreSQL) over planted good and bad hours."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckKey, Definitions, EnvVar, asset, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from l2_lake.format import layout
from l2_lake.format.record import encode_line
from l2_lake.quality.verdicts import HOUR_CHECKS
from l2_pipeline.definitions import build_definitions, defs, partitions_at_load
from l2_pipeline.keys import BOOK_FEATURES, CURATED_PARQUET, INSTRUMENT_METADATA, LAKE_HEALTH, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import hours_start, instrument_keys, parse_partition_key, partition_key
from l2_pipeline.resources import LakeResource, env_names, lake_resource_from_env
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    SOL,
    crossed_record,
    event,
    lake_assets,
    lake_resource,
    make_record,
    make_records,
    materialize_named,
    ms,
    plant_good_hour,
    torn,
    with_gap,
    write_hour,
)

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load_and_validate():
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {"compress_job", "curate_job", "retention_job", "raw_hour_job",
                                                     "instrument_metadata_job", "lake_health_job"}
    assert {s.name for s in repo.schedule_defs} == {"compression_schedule", "retention_schedule",
                                                    "instrument_metadata_schedule", "instance_retention_schedule"}
    assert {s.name for s in repo.sensor_defs} == {"raw_hours_sensor", "collector_freshness_sensor",
                                                  "lake_health_sensor"}
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {RAW_HOUR, RAW_ARCHIVE, CURATED_PARQUET, BOOK_FEATURES, INSTRUMENT_METADATA,
                                          LAKE_HEALTH}
    assert graph.get(RAW_ARCHIVE).parent_keys == {RAW_HOUR} and graph.get(CURATED_PARQUET).parent_keys == {RAW_HOUR}
    assert graph.get(BOOK_FEATURES).parent_keys == {CURATED_PARQUET}
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == RAW_HOUR}
    assert checks == {*HOUR_CHECKS, "collector_freshness"}


def test_workspace_yaml_loads_offline(tmp_path, dagster_instances):
    """`dagster definitions validate -w workspace.yaml`, the loader `dagster dev` uses."""
    dagster = str(Path(sys.executable).parent / "dagster")
    with dagster_instances.home(tmp_path) as home:
        env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "DAGSTER_HOME": str(home),
               "L2_DATA_DIR": str(tmp_path / "data")}
        done = subprocess.run([dagster, "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        # an invalid value stops the code location from loading, naming the variable
        bad = subprocess.run([dagster, "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO,
                             env={**env, "L2_PARTITIONS_START": "2026-13-01"}, capture_output=True, text=True,
                             timeout=120)
    assert bad.returncode != 0 and "L2_PARTITIONS_START='2026-13-01'" in bad.stdout + bad.stderr


def test_resource_from_environment():
    lake = lake_resource_from_env({"L2_DATA_DIR": "/srv/lake", "L2_INSTRUMENTS": "SOL-USDT-SWAP, BTC-USDT-SWAP",
                                   "L2_CADENCE": "0.5", "L2_RETENTION_DRY_RUN": "true",
                                   "L2_COVERAGE_THRESHOLD_PCT": "90"})
    assert lake.root == Path("/srv/lake") and lake.instruments == ["SOL-USDT-SWAP", "BTC-USDT-SWAP"]
    assert lake.cadence_seconds == 0.5 and lake.retention_dry_run and lake.coverage_threshold_pct == 90
    default = lake_resource_from_env({})
    assert default.data_dir == "./data" and default.instruments == [BTC, ETH] and default.rest_url.startswith("https")
    for bad in ({"L2_INSTRUMENTS": "btc-usdt-swap"}, {"L2_CADENCE": "fast"}, {"L2_CADENCE": "-1"},
                {"L2_RETENTION_DRY_RUN": "maybe"}, {"L2_SENSOR_MAX_HOURS_PER_TICK": "0"},
                {"L2_PARTITIONS_START": "2026-01-01-00:30"}):
        (name, value), = bad.items()
        with pytest.raises(ValueError, match=f"{name}={value!r}"):
            lake_resource_from_env(bad)
    # every field names its variable; the documented names, nothing else
    assert set(env_names().values()) == {
        "L2_DATA_DIR", "L2_INSTRUMENTS", "L2_CADENCE", "L2_REST_URL", "L2_REST_TIMEOUT", "L2_COVERAGE_THRESHOLD_PCT",
        "L2_CLOSED_GRACE_MINUTES", "L2_COMPRESS_AFTER_HOURS", "L2_DELETE_AFTER_DAYS", "L2_CURATED_RETENTION_DAYS",
        "L2_FRESHNESS_MINUTES", "L2_SENSOR_MAX_HOURS_PER_TICK", "L2_SENSOR_TICK_BUDGET_SECONDS",
        "L2_CURATE_ON_REGISTER", "L2_RETENTION_DRY_RUN", "L2_PARTITIONS_START", "L2_HOUR_FIGURES", "L2_HEALTH_DAYS",
        "L2_REPLICA_DIRS", "L2_LAKE_URL", "L2_INSTANCE_RETENTION_DAYS", "L2_INSTRUMENT_GROUPS",
        "L2_PARTITIONS_PER_RUN"}


def test_deployment_resource_resolves_env_vars_at_run_time(tmp_path, monkeypatch, dagster_instances):
    """From the process environment, data_dir and rest_url reach Dagster as EnvVars (the UI shows the
    variable); the others as validated values."""
    monkeypatch.setenv("L2_DATA_DIR", str(tmp_path / "first"))
    monkeypatch.setenv("L2_CADENCE", "0.5")
    lake = lake_resource_from_env()
    assert isinstance(lake.data_dir, EnvVar) and lake.data_dir.env_var_name == "L2_DATA_DIR"
    assert lake.cadence_seconds == 0.5 and lake.rest_url == "https://www.okx.com"  # unset: the default
    monkeypatch.setenv("L2_DATA_DIR", str(tmp_path / "second"))
    seen = []

    @asset
    def probe(lake: LakeResource) -> None:
        seen.append(lake.root)

    with dagster_instances.ephemeral() as instance:
        assert materialize([probe], instance=instance, resources={"lake": lake}).success
    assert seen == [tmp_path / "second"]


def test_partitions_fit_the_lake_or_the_configured_start(tmp_path):
    """Hours start at the configured hour, else at the lake's first hour (raw or curated), else at
    the current day; instruments are the configured ones plus those in the lake."""
    lake = lake_resource(tmp_path)
    assert hours_start(partitions_at_load(lake, now=BASE_HOUR + timedelta(hours=30))) == BASE_HOUR + timedelta(days=1)
    plant_good_hour(tmp_path, SOL, BASE_HOUR + timedelta(hours=5), count=10)
    curated = layout.curated_path(tmp_path, BTC, BASE_HOUR + timedelta(hours=3))
    curated.parent.mkdir(parents=True)
    curated.write_bytes(b"")
    partitions = partitions_at_load(lake)
    assert hours_start(partitions) == BASE_HOUR + timedelta(hours=3)
    assert instrument_keys(partitions) == [BTC, ETH, SOL]
    configured = lake_resource(tmp_path, partitions_start="2026-11-20-01:00")
    graph = build_definitions(configured).resolve_asset_graph()
    for key in (RAW_HOUR, RAW_ARCHIVE, CURATED_PARQUET):
        assert graph.get(key).partitions_def.time_window_partitions_def.start == BASE_HOUR + timedelta(hours=1)
    with pytest.raises(ValueError, match="L2_PARTITIONS_START"):
        lake_resource_from_env({"L2_PARTITIONS_START": "2026-11-20 01:00"})


def test_partition_keys_round_trip():
    key = partition_key(BTC, BASE_HOUR)
    assert str(key) == "2026-11-20-00:00|BTC-USDT-SWAP"
    assert parse_partition_key(str(key)) == parse_partition_key(key) == (BTC, BASE_HOUR)
    with pytest.raises(ValueError):
        parse_partition_key("2026-11-20-00:00")
    with pytest.raises(ValueError):
        parse_partition_key("2026-11-20-00:00|../../etc")


def plant_bad_hours(data_dir: Path) -> dict[str, set[str]]:
    """Four planted bad hours of ETH; returns partition → the checks that must fail."""
    expected: dict[str, set[str]] = {}

    def hour(n: int):
        return BASE_HOUR + timedelta(hours=n)

    recs, events = with_gap(make_records(ETH, hour(1)), 500, ETH, hour(1))
    write_hour(data_dir, ETH, hour(1), recs, events=events)
    expected[str(partition_key(ETH, hour(1)))] = {"no_gaps"}

    lines = [encode_line(r) for r in make_records(ETH, hour(2))]
    lines[3] = b'{"timestamp_utc": oops\n'
    lines.append(torn(lines[5]))
    write_hour(data_dir, ETH, hour(2), lines=lines)
    expected[str(partition_key(ETH, hour(2)))] = {"schema_valid"}

    recs = make_records(ETH, hour(3))
    recs[10] = crossed_record(ETH, ms(hour(3)) + 10 * 2000 + 1000, seq=1)
    write_hour(data_dir, ETH, hour(3), recs)
    expected[str(partition_key(ETH, hour(3)))] = {"no_crossed_books"}

    recs = make_records(ETH, hour(4), count=1000)
    recs.append(make_record(ETH, ms(hour(5)) + 100, seq=99_999))  # a record of the next hour
    write_hour(data_dir, ETH, hour(4), recs, events=[event(ETH, "checksum_mismatch", hour(4), expected=1, computed=2)])
    expected[str(partition_key(ETH, hour(4)))] = {"timestamps_valid", "coverage", "no_checksum_failures"}
    return expected


def test_checks_pass_on_good_and_fail_on_planted_bad_hours(tmp_path, dagster_instances):
    plant_good_hour(tmp_path, BTC, BASE_HOUR)
    expected = {str(partition_key(BTC, BASE_HOUR)): set()}
    expected.update(plant_bad_hours(tmp_path))
    lake = lake_resource(tmp_path)
    with dagster_instances.ephemeral() as instance:
        for key, failing in expected.items():
            result = materialize_named(lake, ["raw_hour", "raw_hour_quality"], partition_key=key,
                                       instance=instance, resources={"lake": lake})
            assert result.success  # failed checks do not fail the run
            evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
            assert set(evaluations) == set(HOUR_CHECKS)
            assert {n for n, e in evaluations.items() if not e.passed} == failing, key
            assert all(e.partition == key for e in evaluations.values())
            for name in ("no_gaps", "no_checksum_failures"):
                assert evaluations[name].severity.value == "WARN"
            assert evaluations["schema_valid"].severity.value == "ERROR"
            (mat,) = result.get_asset_materialization_events()
            assert mat.materialization.partition == key and "coverage_pct" in mat.materialization.metadata
        record = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(RAW_HOUR, "no_crossed_books"))
        assert record is not None


def test_archive_and_parquet_assets_per_partition(tmp_path, dagster_instances):
    records = plant_good_hour(tmp_path, BTC, BASE_HOUR, count=120)
    original = layout.records_path(tmp_path, BTC, BASE_HOUR).read_bytes()
    key = str(partition_key(BTC, BASE_HOUR))
    lake: LakeResource = lake_resource(tmp_path)
    assets = lake_assets(lake)
    raw_archive = assets["raw_archive"]
    with dagster_instances.ephemeral() as instance:
        result = materialize_named(lake, ["curated_parquet", "raw_archive"], partition_key=key, instance=instance,
                                   resources={"lake": lake})
        assert result.success
        metas = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
        assert metas[RAW_ARCHIVE]["status"].value == "archived"
        assert metas[CURATED_PARQUET]["rows"].value == 120
        assert pq.read_table(layout.curated_path(tmp_path, BTC, BASE_HOUR)).num_rows == len(records)
        assert not layout.records_path(tmp_path, BTC, BASE_HOUR).exists()
        assert gzip.decompress(layout.archive_path(tmp_path, BTC, BASE_HOUR).read_bytes()) == original
        again = materialize([raw_archive], partition_key=key, instance=instance, resources={"lake": lake})
        (mat,) = again.get_asset_materialization_events()
        assert mat.materialization.metadata["status"].value == "already_archived"
        # an hour with no data file fails each step, naming the hour, the paths looked for, what to do
        missing = str(partition_key(BTC, BASE_HOUR + timedelta(hours=7)))
        none = materialize_named(lake, ["raw_archive", "curated_parquet"], partition_key=missing,
                                 instance=instance, resources={"lake": lake}, raise_on_error=False)
        assert not none.success and none.get_asset_materialization_events() == []
        failures = {e.step_key: e.step_failure_data.user_failure_data.description
                    for e in none.all_events if e.is_step_failure}
        assert set(failures) == {"raw_archive", "hour_tiers"}
        for description in failures.values():
            assert f"- {missing}: no data" in description
            assert str(layout.records_path(tmp_path, BTC, BASE_HOUR + timedelta(hours=7))) in description
            assert "Leave the hour out of the backfill" in description


def test_empty_hour_materializes_with_a_note_and_a_missing_hour_fails(tmp_path, dagster_instances):
    """A file that exists but holds no record is data (every asset materializes it, saying so in a
    `note`); an hour with no file at all fails raw_hour too, naming the paths it looked for."""
    empty = BASE_HOUR + timedelta(hours=2)
    write_hour(tmp_path, BTC, empty, lines=[b"not a record\n"])
    lake = lake_resource(tmp_path)
    with dagster_instances.ephemeral() as instance:
        key = str(partition_key(BTC, empty))
        results = [materialize_named(lake, names, partition_key=key, instance=instance, resources={"lake": lake})
                   for names in (["raw_hour"], ["curated_parquet", "raw_archive"])]
        assert all(result.success for result in results)
        metas = {e.asset_key: e.materialization.metadata for r in results for e in r.get_asset_materialization_events()}
        assert metas[RAW_HOUR]["records"].value == 0 and metas[RAW_HOUR]["invalid_lines"].value == 1
        assert metas[CURATED_PARQUET]["rows"].value == 0 and metas[CURATED_PARQUET]["skipped_lines"].value == 1
        for asset_key in (RAW_HOUR, CURATED_PARQUET):
            assert "no record" in metas[asset_key]["note"].value
        assert metas[RAW_ARCHIVE]["status"].value == "archived" and metas[RAW_ARCHIVE]["lines"].value == 1
        assert pq.read_metadata(layout.curated_path(tmp_path, BTC, empty)).num_rows == 0

        missing = BASE_HOUR + timedelta(hours=5)
        key = str(partition_key(BTC, missing))
        failed = materialize_named(lake, ["raw_hour"], partition_key=key, instance=instance,
                                   resources={"lake": lake}, raise_on_error=False)
        assert not failed.success and instance.get_materialized_partitions(RAW_HOUR) == {str(partition_key(BTC, empty))}
        (failure,) = [e for e in failed.all_events if e.is_step_failure]
        description = failure.step_failure_data.user_failure_data.description
        assert f"- {key}: no data" in description and "Leave the hour out of the backfill" in description
        for path in (layout.records_path, layout.archive_path):
            assert str(path(tmp_path, BTC, missing)) in description


def test_one_check_reruns_alone_without_rewriting_the_hour(tmp_path, dagster_instances):
    """hour_checks_job, subset to one check, over a range given by tags (how the Launchpad and the
    CLI launch it: Dagster 1.13 gives a checks-only job no partition picker): only that check is
    evaluated, for each hour, against its latest materialization; raw_hour is not materialized again."""
    records = make_records(BTC, BASE_HOUR, count=100)
    records[3] = crossed_record(BTC, ms(BASE_HOUR) + 3 * 2000 + 1000, seq=3)
    write_hour(tmp_path, BTC, BASE_HOUR, records)
    plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=1), count=100)
    lake = lake_resource(tmp_path)
    key, next_key = str(partition_key(BTC, BASE_HOUR)), str(partition_key(BTC, BASE_HOUR + timedelta(hours=1)))
    defs_over_lake = build_definitions(lake)
    with dagster_instances.ephemeral() as instance:
        hours = {ASSET_PARTITION_RANGE_START_TAG: key, ASSET_PARTITION_RANGE_END_TAG: next_key}
        registered = defs_over_lake.resolve_job_def("raw_hour_job").execute_in_process(instance=instance, tags=hours)
        quality = {m.materialization.partition: m.materialization.metadata["quality"].value
                   for m in registered.get_asset_materialization_events()}
        assert quality == {key: "FAILED: coverage, no_crossed_books", next_key: "FAILED: coverage"}
        one = defs_over_lake.resolve_job_def("hour_checks_job").get_subset(
            asset_check_selection={AssetCheckKey(RAW_HOUR, "no_crossed_books")})
        rerun = one.execute_in_process(instance=instance, tags=hours)
        assert rerun.get_asset_materialization_events() == []
        evaluations = {e.partition: e for e in rerun.get_asset_check_evaluations()}
        assert {e.check_name for e in evaluations.values()} == {"no_crossed_books"}
        assert not evaluations[key].passed and evaluations[next_key].passed
        for partition, evaluation in evaluations.items():
            assert evaluation.target_materialization_data.storage_id == latest_storage_id(instance, partition)


def latest_storage_id(instance, key: str) -> int:
    from l2_pipeline.registry import latest_materializations

    return latest_materializations(instance, [key])[key].storage_id
