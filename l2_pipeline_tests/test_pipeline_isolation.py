"""One bad item never fails every tick or run: a corrupt hour file is registered by its
raw_hour run with its error (schema_valid fails for that partition, the other hours of the run are
fine); an unreadable directory, an unparseable cursor or an odd file name is logged and skipped,
and the tick makes progress.

Unreadable directories are real: mode 000, and when the tests run as root (whose
CAP_DAC_OVERRIDE reads anything) the tick is evaluated with effective uid/gid `nobody`.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from dagster import RunRequest, build_schedule_context, build_sensor_context

from l2_lake.format import layout
from l2_lake.quality.verdicts import HOUR_CHECKS, SCHEMA_VALID
from l2_lake.tiers.curated import write_parquet
from l2_pipeline.keys import CURATED_PARQUET, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline.schedules import retention_schedule
from l2_pipeline.sensors import FreshnessCursor, RawCursor, collector_freshness_sensor
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    check_status,
    execute_backfill_request,
    lake_definitions,
    lake_resource,
    lake_schedule,
    latest_raw_hour,
    make_records,
    ms,
    parquet_tiers,
    plant_good_hour,
    plant_live_hour,
    range_keys,
    raw_hours_tick,
    register_closed_hours,
    requested,
    write_hour,
)

NOBODY = 65534


@pytest.fixture
def lake_dir() -> Iterator[Path]:
    """A lake `nobody` can traverse (pytest's tmp_path lies under a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="l2-lake-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@contextmanager
def unreadable(path: Path) -> Iterator[None]:
    """`path` cannot be read or searched by this process inside the block."""
    import _strptime  # noqa: F401  (datetime.strptime imports it on first use; `nobody` may not read the stdlib)

    mode = path.stat().st_mode
    path.chmod(0)
    try:
        if os.geteuid() == 0:
            os.setegid(NOBODY)
            os.seteuid(NOBODY)
            try:
                yield
            finally:
                os.seteuid(0)
                os.setegid(0)
        else:
            yield
    finally:
        path.chmod(mode)


def h(offset: float) -> datetime:
    return BASE_HOUR + timedelta(hours=offset)


def key(inst_id: str, offset: int) -> str:
    return str(partition_key(inst_id, h(offset)))


def evaluations(runs, partition: str) -> dict:
    """check name → the AssetCheckEvaluation of `partition` in `runs`."""
    return {e.check_name: e for run in runs for e in run.get_asset_check_evaluations() if e.partition == partition}


def plant_bad_crc_archive(data_dir: Path, inst_id: str, hour: datetime) -> Path:
    """A .jsonl.gz whose CRC32 trailer does not match its content (gzip raises BadGzipFile)."""
    path = write_hour(data_dir, inst_id, hour, make_records(inst_id, hour, count=20), archived=True)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # first byte of the CRC32 in the 8-byte trailer
    path.write_bytes(bytes(data))
    return path


def test_corrupt_hour_is_registered_with_its_error_and_the_run_goes_on(instance, tmp_path, capfd):
    plant_good_hour(tmp_path, BTC, h(0), count=20)
    corrupt = plant_bad_crc_archive(tmp_path, BTC, h(1))
    plant_good_hour(tmp_path, BTC, h(2), count=20)
    plant_good_hour(tmp_path, ETH, h(1), count=20)
    lake = lake_resource(tmp_path, coverage_threshold_pct=0)  # short hours: only the corrupt one fails a check
    everything = {key(BTC, 0), key(BTC, 1), key(BTC, 2), key(ETH, 1)}

    result = raw_hours_tick(instance, lake)  # reads no file: the corrupt hour is requested like the others
    assert requested(result) == {"raw_hour": everything, "raw_archive": {key(BTC, 1)}, **parquet_tiers(everything)}
    assert RawCursor.parse(result.cursor).last == {BTC: h(2), ETH: h(1)}
    runs = execute_backfill_request(instance, lake, result, raise_on_error=False)
    by_job: dict[str, list] = {}
    for run in runs:
        by_job.setdefault(run.dagster_run.job_name, []).append(run)

    # the raw_hour run holding the corrupt hour succeeds: the hour is registered with its error
    def registered(run) -> set[str]:
        return {e.materialization.partition for e in run.get_asset_materialization_events() if e.asset_key == RAW_HOUR}

    (btc_run,) = [r for r in by_job["raw_hour_job"] if key(BTC, 1) in registered(r)]
    assert all(run.success for run in by_job["raw_hour_job"])
    assert registered(btc_run) == {
        key(BTC, 0), key(BTC, 1), key(BTC, 2)}  # one run over the instrument's range
    assert instance.get_materialized_partitions(RAW_HOUR) == everything
    error = latest_raw_hour(instance, key(BTC, 1)).metadata["error"].value
    assert error.startswith("BadGzipFile:") and "CRC check failed" in error
    (schema,) = evaluations([btc_run], key(BTC, 1)).values()  # only schema_valid for an unreadable hour
    assert schema.check_name == SCHEMA_VALID and not schema.passed and error in schema.description
    for good in (key(BTC, 0), key(BTC, 2), key(ETH, 1)):
        assert {name for name, e in evaluations(runs, good).items() if e.passed} == set(HOUR_CHECKS)
    status = check_status(instance, lake)
    assert status[SCHEMA_VALID] == {"FAILED": {key(BTC, 1)}, "SUCCEEDED": everything - {key(BTC, 1)}}
    for name in set(HOUR_CHECKS) - {SCHEMA_VALID}:  # not evaluated for the unreadable hour
        assert status[name] == {"SKIPPED": {key(BTC, 1)}, "SUCCEEDED": everything - {key(BTC, 1)}}, name
    # found archived, but the archive does not decompress: not a raw_archive; curating it fails too,
    # each naming it alone
    assert instance.get_materialized_partitions(RAW_ARCHIVE) == set()
    assert instance.get_materialized_partitions(CURATED_PARQUET) == everything - {key(BTC, 1)}
    descriptions = {}
    for job_name, of in (("compress_job", "1 of 1"), ("curate_job", "1 of 3")):
        (failed,) = [run for run in by_job[job_name] if not run.success]
        (failure,) = [e for e in failed.all_events if e.is_step_failure]
        descriptions[job_name] = failure.step_failure_data.user_failure_data.description
        assert descriptions[job_name].startswith(f"{of} hour(s) not materialized")
        assert f"- {key(BTC, 1)}: " in descriptions[job_name]
    assert "does not decompress" in descriptions["compress_job"]
    log = capfd.readouterr().err
    assert f"{key(BTC, 1)}: cannot read the hour" in log and "CRC check failed" in log

    reset = raw_hours_tick(instance, lake)  # still corrupt, already registered: nothing again, no failure
    assert reset.run_requests == [] and reset.skip_reason is not None

    write_hour(tmp_path, BTC, h(1), make_records(BTC, h(1), count=20), archived=True)  # repaired
    assert gzip.decompress(corrupt.read_bytes())
    repaired = raw_hours_tick(instance, lake)  # its files changed: registered again, Parquet included
    assert requested(repaired) == {"raw_hour": {key(BTC, 1)}, "raw_archive": {key(BTC, 1)},
                                   **parquet_tiers({key(BTC, 1)})}
    assert all(run.success for run in execute_backfill_request(instance, lake, repaired))
    assert "error" not in latest_raw_hour(instance, key(BTC, 1)).metadata
    assert check_status(instance, lake) == {name: {"SUCCEEDED": everything} for name in HOUR_CHECKS}
    assert instance.get_materialized_partitions(CURATED_PARQUET) == everything


@pytest.mark.parametrize("cursor", [
    "not json",
    '{"BTC-USDT-SWAP": "2026-11-20T01:00:00Z"}',  # an older format without "v"/"last"
    '{"v": 1, "last": {"BTC-USDT-SWAP": "yesterday"}}',
    '{"v": 1, "last": {"btc": "2026-11-20T01:00:00Z"}}',
    '{"v": 1, "last": ["BTC-USDT-SWAP"]}',
    "[1, 2]",
])
def test_unparseable_cursor_is_logged_and_taken_as_empty(instance, tmp_path, capfd, cursor):
    with pytest.raises(ValueError):
        RawCursor.parse(cursor)
    for offset in range(2):
        plant_good_hour(tmp_path, BTC, h(offset), count=10)
    lake = lake_resource(tmp_path, instruments=[BTC])
    first = register_closed_hours(instance, lake, cursor)  # nothing registered yet: registers everything
    assert requested(first)["raw_hour"] == {key(BTC, 0), key(BTC, 1)}
    assert instance.get_materialized_partitions(RAW_HOUR) == {key(BTC, 0), key(BTC, 1)}
    assert "cannot parse cursor" in capfd.readouterr().err
    again = raw_hours_tick(instance, lake, cursor)  # registered: nothing twice, and a valid cursor again
    assert again.run_requests == [] and again.skip_reason is not None
    assert RawCursor.parse(again.cursor).last == {BTC: h(1)}


def test_freshness_sensor_with_unparseable_cursor(instance, tmp_path, capfd):
    plant_good_hour(tmp_path, BTC, layout.hour_floor(ms(datetime.now(UTC))), count=1)
    lake = lake_resource(tmp_path, instruments=[BTC])
    for cursor in ("{oops", '{"passed": "yes", "at": 0}', "[]"):
        result = collector_freshness_sensor(build_sensor_context(instance=instance, cursor=cursor,
                                                                 resources={"lake": lake}))
        (evaluation,) = result.asset_events
        assert evaluation.passed and FreshnessCursor.parse(result.cursor).passed is True
    assert capfd.readouterr().err.count("cannot parse cursor") == 3


def test_unreadable_day_directory_is_skipped_by_the_sensor(instance, lake_dir, capfd):
    plant_good_hour(lake_dir, BTC, h(0), count=10)
    plant_good_hour(lake_dir, ETH, h(0), count=10)
    plant_good_hour(lake_dir, ETH, h(24), count=10)  # the next day
    lake = lake_resource(lake_dir)
    sensor = lake_definitions(lake).resolve_sensor_def("raw_hours_sensor")  # the code location loaded before
    with unreadable(layout.hour_dir(lake_dir, ETH, h(0))):
        result = sensor(build_sensor_context(instance=instance, resources={"lake": lake}))
    assert requested(result) == {"raw_hour": {key(BTC, 0), key(ETH, 24)},
                                 **parquet_tiers({key(BTC, 0), key(ETH, 24)})}
    log = capfd.readouterr().err
    assert "Permission denied" in log and str(layout.hour_dir(lake_dir, ETH, h(0))) in log


def test_freshness_names_an_unreadable_directory(instance, lake_dir):
    now = datetime.now(UTC)
    current = layout.hour_floor(ms(now))
    plant_good_hour(lake_dir, BTC, current, count=1)
    plant_good_hour(lake_dir, ETH, current, count=1)
    lake = lake_resource(lake_dir)
    with unreadable(layout.hour_dir(lake_dir, ETH, current)):
        result = collector_freshness_sensor(build_sensor_context(instance=instance, resources={"lake": lake}))
    (evaluation,) = result.asset_events
    assert not evaluation.passed
    assert f"{ETH}: unreadable" in evaluation.description and "Permission denied" in evaluation.description
    assert evaluation.metadata["unreadable_instruments"].value == 1


def test_schedules_skip_an_unreadable_directory(lake_dir, capfd, dagster_instances):
    for inst_id in (BTC, ETH):
        for offset in (0, 24):
            plant_good_hour(lake_dir, inst_id, h(offset), count=2)
    plant_live_hour(lake_dir, h(24 * 7))
    lake = lake_resource(lake_dir)
    compression_schedule = lake_schedule(lake)  # the code location loaded before the directory went bad
    home = lake_dir / "dagster_home"  # beside raw/, which is all the schedules look at; removed with the lake
    with dagster_instances.persistent(home) as instance, build_schedule_context(
            instance=instance, scheduled_execution_time=h(24 * 7), resources={"lake": lake}) as context:
        if os.geteuid() == 0:  # the schedule reads the instance as `nobody` too
            for path in [home, *home.rglob("*")]:
                os.chown(path, NOBODY, NOBODY)
        with unreadable(layout.hour_dir(lake_dir, ETH, h(0))):
            compression = compression_schedule(context)
            retention = retention_schedule(context)
        compressed = sorted(k for request in compression for k in range_keys(request, lake))
    assert compressed == sorted([key(BTC, 0), key(BTC, 24), key(ETH, 24)])
    assert retention.tags["l2/files_due"] == "3"
    assert capfd.readouterr().err.count("Permission denied") == 2


def test_retention_ignores_a_curated_file_with_odd_digits(tmp_path):
    plant_good_hour(tmp_path, BTC, h(0), count=2)
    write_parquet(tmp_path, BTC, h(0), datetime.now(UTC))
    curated = layout.curated_path(tmp_path, BTC, h(0))
    for odd in ("hour=²³", "hour=٣"):  # "²³".isdigit() is True and int() raises; int("٣") == 3
        (curated.parent.parent / odd).mkdir()
        (curated.parent.parent / odd / layout.PARQUET_FILE).write_bytes(b"")
    plant_live_hour(tmp_path, h(24 * 8))
    lake = lake_resource(tmp_path, curated_retention_days=7)
    request = retention_schedule(build_schedule_context(scheduled_execution_time=h(24 * 8), resources={"lake": lake}))
    assert isinstance(request, RunRequest) and request.tags["l2/files_due"] == "2"  # the raw hour + its Parquet


def test_cursor_dump_round_trips():
    cursor = RawCursor({BTC: h(3), ETH: h(1)})
    assert RawCursor.parse(cursor.dump()) == cursor
    assert orjson.loads(cursor.dump()) == {"v": 1, "last": {BTC: "2026-11-20T03:00:00Z", ETH: "2026-11-20T01:00:00Z"}}
    assert FreshnessCursor.parse(FreshnessCursor(False, 12.5).dump()) == FreshnessCursor(False, 12.5)
