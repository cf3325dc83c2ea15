"""The code location loads and validates, and its assets and partitioned checks run on a real
ephemeral instance over planted good and bad hours."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckKey, DagsterInstance, Definitions, materialize

from collector import layout
from collector.record import encode_line
from l2_pipeline.assets import curated_parquet, raw_archive, raw_hour
from l2_pipeline.checks import raw_hour_quality
from l2_pipeline.definitions import defs
from l2_pipeline.keys import CURATED_PARQUET, INSTRUMENT_METADATA, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import parse_partition_key, partition_key
from l2_pipeline.quality import HOUR_CHECKS
from l2_pipeline.resources import LakeResource, lake_resource_from_env
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    crossed_record,
    event,
    lake_resource,
    make_record,
    make_records,
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
                                                     "instrument_metadata_job"}
    assert {s.name for s in repo.schedule_defs} == {"compression_schedule", "retention_schedule",
                                                    "instrument_metadata_schedule"}
    assert {s.name for s in repo.sensor_defs} == {"raw_hours_sensor", "collector_freshness_sensor"}
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {RAW_HOUR, RAW_ARCHIVE, CURATED_PARQUET, INSTRUMENT_METADATA}
    assert graph.get(RAW_ARCHIVE).parent_keys == {RAW_HOUR} and graph.get(CURATED_PARQUET).parent_keys == {RAW_HOUR}
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == RAW_HOUR}
    assert checks == {*HOUR_CHECKS, "collector_freshness"}


def test_workspace_yaml_loads_offline(tmp_path):
    """`dagster definitions validate -w workspace.yaml`, the loader `dagster dev` uses."""
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path),
           "L2_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
                           "workspace.yaml"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_resource_from_environment():
    lake = lake_resource_from_env({"L2_DATA_DIR": "/srv/lake", "L2_INSTRUMENTS": "SOL-USDT-SWAP, BTC-USDT-SWAP",
                                   "L2_CADENCE": "0.5", "L2_RETENTION_DRY_RUN": "true",
                                   "L2_COVERAGE_THRESHOLD_PCT": "90"})
    assert lake.root == Path("/srv/lake") and lake.instruments == ["SOL-USDT-SWAP", "BTC-USDT-SWAP"]
    assert lake.cadence_seconds == 0.5 and lake.retention_dry_run and lake.coverage_threshold_pct == 90
    default = lake_resource_from_env({})
    assert default.data_dir == "./data" and default.instruments == [BTC, ETH] and default.rest_url.startswith("https")
    for bad in ({"L2_INSTRUMENTS": "btc-usdt-swap"}, {"L2_CADENCE": "fast"}, {"L2_CADENCE": "-1"},
                {"L2_RETENTION_DRY_RUN": "maybe"}):
        with pytest.raises(ValueError, match="L2_"):
            lake_resource_from_env(bad)


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


def test_checks_pass_on_good_and_fail_on_planted_bad_hours(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR)
    expected = {str(partition_key(BTC, BASE_HOUR)): set()}
    expected.update(plant_bad_hours(tmp_path))
    lake = lake_resource(tmp_path)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("instrument", [BTC, ETH])
        for key, failing in expected.items():
            result = materialize([raw_hour, raw_hour_quality], partition_key=key, instance=instance,
                                 resources={"lake": lake})
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


def test_archive_and_parquet_assets_per_partition(tmp_path):
    records = plant_good_hour(tmp_path, BTC, BASE_HOUR, count=120)
    original = layout.records_path(tmp_path, BTC, BASE_HOUR).read_bytes()
    key = str(partition_key(BTC, BASE_HOUR))
    lake: LakeResource = lake_resource(tmp_path)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("instrument", [BTC])
        result = materialize([curated_parquet, raw_archive], partition_key=key, instance=instance,
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
        missing = str(partition_key(BTC, BASE_HOUR + timedelta(hours=7)))
        none = materialize([raw_archive, curated_parquet], partition_key=missing, instance=instance,
                           resources={"lake": lake})
        assert none.success and none.get_asset_materialization_events() == []
