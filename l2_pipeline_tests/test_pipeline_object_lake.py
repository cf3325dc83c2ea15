"""The pipeline with its lake in object storage (`L2_LAKE_URL`), against moto's S3 server as a process
on loopback. Hours reach the bucket the way they do in production: the collector's shipper
(`collector.ship.Shipper`) moves them from a spool. Then registration with its six checks, the
archive step, curated Parquet, features and retention all run on the bucket, and what they leave
there is compared with the same pipeline over a local copy of the same hours."""

from __future__ import annotations

import gzip
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.ship import Shipper
from collector_tests.s3_server import s3_env
from l2_lake.format import layout
from l2_lake.quality.stats_cache import unchanged
from l2_lake.store.s3 import S3Store, parse_lake_url
from l2_lake.tiers.selection import compression_due
from l2_pipeline import read_books
from l2_pipeline.jobs import retention_job
from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline.resources import lake_resource_from_env
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    check_status,
    event,
    execute_ranged,
    lake_resource,
    latest_raw_hour,
    make_records,
    plant_good_hour,
    plant_live_hour,
    register_closed_hours,
    with_gap,
    write_events,
    write_hour,
)

HOURS = [BASE_HOUR + timedelta(hours=i) for i in range(3)]
GAP_HOUR = HOURS[1]


def key(hour: datetime, inst_id: str = BTC) -> str:
    return f"{hour:%Y-%m-%d-%H:%M}|{inst_id}"


def object_keys(s3_server, bucket: str, prefix: str) -> list[str]:
    found = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in found)


@pytest.fixture
def shipped(s3_server, tmp_path, monkeypatch):
    """Three BTC hours (the second with a gap) and two ETH hours, shipped by the collector's shipper
    from a spool into `s3://bucket/lake`; `local` keeps a copy of the spool as a local lake."""
    s3_env(monkeypatch, s3_server.endpoint)
    bucket = s3_server.create_bucket()
    spool, local = tmp_path / "spool", tmp_path / "local"
    for hour in HOURS:
        records = make_records(BTC, hour, count=60, depth=20)
        if hour == GAP_HOUR:
            records, events = with_gap(records, 30, BTC, hour)
            write_events(spool, BTC, hour, events)
        write_hour(spool, BTC, hour, records)
    for hour in HOURS[:2]:
        plant_good_hour(spool, ETH, hour, count=60, depth=20)
    write_events(spool, ETH, HOURS[0], [event(ETH, "reconnect", HOURS[0], reason="test")])
    shutil.copytree(spool, local)
    url = f"s3://{bucket}/lake"
    Shipper(spool, url).ship_once()
    assert not list(layout.raw_root(spool).rglob("*.jsonl*")), "the shipper left hours in the spool"
    return {"url": url, "bucket": bucket, "local": local, "work": tmp_path / "work"}


def test_registration_checks_parquet_and_features_run_on_the_bucket(shipped, s3_server, dagster_instances):
    url, bucket, local = shipped["url"], shipped["bucket"], shipped["local"]
    lake = lake_resource(shipped["work"], lake_url=url)
    with dagster_instances.ephemeral() as instance:
        tick = register_closed_hours(instance, lake)
        hours = {key(h) for h in HOURS} | {key(h, ETH) for h in HOURS[:2]}
        subsets = {k.to_user_string(): set(s.get_partition_keys())
                   for k, s in tick.run_requests[0].asset_graph_subset.partitions_subsets_by_asset_key.items()}
        assert subsets == {"raw_hour": hours, "raw_archive": hours, "curated_parquet": hours,
                           "book_features": hours}  # shipped hours are already .jsonl.gz

        meta = latest_raw_hour(instance, key(HOURS[0])).metadata
        assert meta["records"].value == 60
        assert meta["source"].value == f"{url}/raw/okx/l2_perps/{BTC}/2026-11-20/00.jsonl.gz"
        assert latest_raw_hour(instance, key(GAP_HOUR)).metadata["gaps"].value == 1
        status = check_status(instance, lake)
        assert status["no_gaps"] == {"FAILED": {key(GAP_HOUR)}, "SUCCEEDED": hours - {key(GAP_HOUR)}}
        assert status["schema_valid"] == {"SUCCEEDED": hours}

        # the curated tier in the bucket is the local lake's hours, row for row
        curated = object_keys(s3_server, bucket, "lake/curated/")
        features = object_keys(s3_server, bucket, "lake/features/")
        assert len(curated) == len(features) == 5
        assert f"lake/curated/okx/l2_perps/instId={BTC}/date=2026-11-20/hour=1/data.parquet" in curated
        for inst_id in (BTC, ETH):
            remote = read_books(inst_id, HOURS[0], HOURS[-1] + timedelta(hours=1), lake=url, include_flagged=True)
            assert remote.num_rows > 0 and remote.equals(
                read_books(inst_id, HOURS[0], HOURS[-1] + timedelta(hours=1), lake=local, include_flagged=True))
        assert not list(shipped["work"].glob(".l2-work-*")), "a workspace was left behind"

        # the fingerprints recorded are the bucket's: a cursor reset finds every hour unchanged
        again = register_closed_hours(instance, lake, cursor=None)
        assert not again.run_requests and "5 unchanged" in again.skip_reason.skip_message


def test_instrument_groups_on_the_bucket(shipped, s3_server, dagster_instances):
    """BTC and ETH in one group, the lake in the bucket: each group-hour stages and reads each member's
    objects, writes each member's Parquet to the bucket and records the bucket's fingerprints."""
    url, bucket = shipped["url"], shipped["bucket"]
    lake = lake_resource(shipped["work"], lake_url=url, instrument_groups=1)
    group = [str(partition_key(BTC, hour, 1)) for hour in HOURS]
    with dagster_instances.ephemeral() as instance:
        tick = register_closed_hours(instance, lake)
        assert set(tick.run_requests[0].asset_graph_subset.partitions_subsets_by_asset_key[RAW_HOUR]
                   .get_partition_keys()) == set(group)
        first = latest_raw_hour(instance, group[0]).metadata
        assert first["instrument_ids"].value == f"{BTC}, {ETH}" and first["records"].value == 120
        assert first["by_instrument"].value[BTC]["source"] == f"{url}/raw/okx/l2_perps/{BTC}/2026-11-20/00.jsonl.gz"
        assert latest_raw_hour(instance, group[2]).metadata["instrument_ids"].value == BTC  # ETH has 2 hours
        assert check_status(instance, lake)["no_gaps"] == {"FAILED": {group[1]}, "SUCCEEDED": {group[0], group[2]}}
        assert len(object_keys(s3_server, bucket, "lake/curated/")) == 5
        again = register_closed_hours(instance, lake, cursor=None)
        assert not again.run_requests and "5 unchanged" in again.skip_reason.skip_message
        assert not list(shipped["work"].glob(".l2-work-*")), "a workspace was left behind"


def test_compression_of_an_uploaded_jsonl_is_verified_before_the_original_object_goes(
        shipped, s3_server, fault_proxy_factory, monkeypatch, dagster_instances):
    url, bucket = shipped["url"], shipped["bucket"]
    hour = BASE_HOUR - timedelta(hours=1)  # a plain .jsonl in the bucket (a collector that did not gzip)
    plain = make_records(BTC, hour, count=40, depth=10)
    source = write_hour(shipped["work"] / "upload", BTC, hour, plain)
    relative = layout.records_path(Path(""), BTC, hour).as_posix()
    s3_server.client().put_object(Bucket=bucket, Key=f"lake/{relative}", Body=source.read_bytes())
    lake = lake_resource(shipped["work"], lake_url=url, partitions_start="2026-11-19-00:00")
    now = datetime.now(UTC)
    assert [(d.inst_id, d.hour) for d in compression_due(lake.tree, now, lake.compress_after, lake.grace)] \
        == [(BTC, hour)]
    tags = _one_hour_tags(key(hour))
    registered = lake.tree.fingerprint(BTC, hour)  # as raw_hour would record it
    with dagster_instances.ephemeral() as instance:
        proxy = fault_proxy_factory(s3_server.port)
        proxy.fail_puts = 100  # the store refuses every upload: nothing may be removed
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        failed = execute_ranged(instance, lake, "compress_job", tags, raise_on_error=False)
        assert not failed.success and proxy.puts_failed > 0
        assert object_keys(s3_server, bucket, f"lake/{relative}") == [f"lake/{relative}"]

        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
        assert execute_ranged(instance, lake, "compress_job", tags).success
    assert object_keys(s3_server, bucket, f"lake/{relative}") == [f"lake/{relative}.gz"]
    archived = s3_server.client().get_object(Bucket=bucket, Key=f"lake/{relative}.gz")["Body"].read()
    assert gzip.decompress(archived) == source.read_bytes()
    assert not list(shipped["work"].glob(".l2-work-*"))
    # the archive object keeps the .jsonl object's time, as a local archive its original's mtime: the hour
    # registered from the .jsonl is unchanged (a cursor reset does not read it again) ...
    assert unchanged(registered, lake.tree.fingerprint(BTC, hour))
    # ... which an archive put there by anything else is not
    time.sleep(1.1)  # Last-Modified counts seconds: the whole compression took less than one
    s3_server.client().put_object(Bucket=bucket, Key=f"lake/{relative}.gz", Body=archived)
    assert not unchanged(registered, lake.tree.fingerprint(BTC, hour))


def _one_hour_tags(partition: str) -> dict[str, str]:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    return {ASSET_PARTITION_RANGE_START_TAG: partition, ASSET_PARTITION_RANGE_END_TAG: partition}


def test_retention_deletes_from_the_bucket_under_the_same_rules(shipped, s3_server, dagster_instances):
    url, bucket = shipped["url"], shipped["bucket"]
    lake = lake_resource(shipped["work"], lake_url=url)
    with dagster_instances.ephemeral() as instance:
        register_closed_hours(instance, lake)
        curated_before = object_keys(s3_server, bucket, "lake/curated/")
        as_of = (HOURS[0] + timedelta(days=5, hours=1, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        live = plant_live_hour(shipped["work"] / "live", HOURS[0] + timedelta(days=5, hours=1))
        S3Store(parse_lake_url(url)).write_verified(live.relative_to(shipped["work"] / "live").as_posix(),
                                                    live.read_bytes(), {}, "application/x-ndjson")
        run = retention_job.execute_in_process(
            run_config={"ops": {"delete_expired": {"config": {"as_of": as_of}}}},
            instance=instance, resources={"lake": lake})
        assert run.success
    raw = object_keys(s3_server, bucket, "lake/raw/")
    # hours 00 (BTC, ETH) ended 5 days before as_of; 01 and 02 did not
    assert not [k for k in raw if "/2026-11-20/00." in k]
    assert [k for k in raw if "/2026-11-20/01." in k] and [k for k in raw if "/2026-11-20/02." in k]
    assert object_keys(s3_server, bucket, "lake/curated/") == curated_before  # curated: 30 days


def test_lake_url_is_validated_when_the_code_location_loads(tmp_path):
    with pytest.raises(ValueError, match=r"L2_LAKE_URL='http://bucket/x': .*s3://bucket"):
        lake_resource_from_env({"L2_LAKE_URL": "http://bucket/x", "L2_DATA_DIR": str(tmp_path)})
    with pytest.raises(ValueError, match="L2_LAKE_URL and L2_REPLICA_DIRS cannot be combined"):
        lake_resource_from_env({"L2_LAKE_URL": "s3://bucket/x", "L2_REPLICA_DIRS": f"a={tmp_path}"})


def test_instrument_metadata_lands_in_the_bucket(shipped, s3_server, dagster_instances):
    from dagster import materialize

    from l2_pipeline.assets.lake import instrument_metadata
    from l2_pipeline_tests.test_pipeline_instruments import FakeOkx

    okx = FakeOkx()
    try:
        lake = lake_resource(shipped["work"], lake_url=shipped["url"], rest_url=okx.url)
        with dagster_instances.ephemeral() as instance:
            assert materialize([instrument_metadata], instance=instance, resources={"lake": lake}).success
            okx.change(BTC, tickSz="0.2")
            assert materialize([instrument_metadata], instance=instance, resources={"lake": lake}).success
    finally:
        okx.close()
    meta = object_keys(s3_server, shipped["bucket"], "lake/meta/okx/instruments/")
    assert f"lake/meta/okx/instruments/{BTC}.json" in meta and f"lake/meta/okx/instruments/{ETH}.json" in meta
    history = s3_server.client().get_object(Bucket=shipped["bucket"],
                                            Key=f"lake/meta/okx/instruments/{BTC}.history.jsonl")["Body"].read()
    assert b'"0.2"' in history.splitlines()[-1]
    assert not list(shipped["work"].glob(".l2-work-*"))
