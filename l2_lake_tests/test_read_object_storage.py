"""`read_books` / `export` over the lake's home in object storage (a real S3 server process on
loopback): the same table as from the local lake, whether an hour was shipped as `.jsonl.gz` or
its curated Parquet was uploaded; errors name the URL."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from collector.cli import main as cli_main
from l2_lake import ReadError, book_at, read_books
from l2_lake.format import layout
from l2_lake.tiers.curated import write_parquet
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, ETH, event, plant_good_hour, write_events

START, END = BASE_HOUR, BASE_HOUR + timedelta(hours=3)


def upload(client, bucket: str, prefix: str, root, path) -> None:
    client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())


@pytest.fixture
def shipped(s3_server, tmp_path, monkeypatch):
    """A local lake of 3 hours (BTC), and the same hours in a bucket as the collector ships them
    (`.jsonl.gz` + events); hour 02 also has its curated Parquet uploaded."""
    root = tmp_path / "lake"
    for offset in range(3):
        plant_good_hour(root, BTC, BASE_HOUR + timedelta(hours=offset), count=40, depth=30)
    write_events(root, BTC, BASE_HOUR, [event(BTC, "reconnect", BASE_HOUR, reason="x")])
    write_parquet(root, BTC, BASE_HOUR + timedelta(hours=2), datetime.now(UTC))
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    for offset in range(3):
        hour = BASE_HOUR + timedelta(hours=offset)
        records = layout.records_path(root, BTC, hour)
        key = f"lake/{layout.archive_path(root, BTC, hour).relative_to(root).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=gzip.compress(records.read_bytes()))
    upload(client, bucket, "lake", root, layout.events_path(root, BTC, BASE_HOUR))
    upload(client, bucket, "lake", root, layout.curated_path(root, BTC, BASE_HOUR + timedelta(hours=2)))
    for name, value in {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    return root, f"s3://{bucket}/lake"


def test_read_books_from_object_storage_is_the_local_read(shipped):
    root, url = shipped
    for depth in (None, 5):
        remote = read_books(BTC, START, END, lake=url, depth=depth, include_flagged=True)
        assert remote.num_rows == 120 and remote.equals(read_books(BTC, START, END, lake=root, depth=depth,
                                                                   include_flagged=True))
    at = BASE_HOUR + timedelta(hours=1, seconds=30)
    assert book_at(BTC, at, lake=url).equals(book_at(BTC, at, lake=root))


def test_cli_reads_the_bucket_given_as_lake(shipped, tmp_path, capsys):
    _, url = shipped
    out = tmp_path / "btc.parquet"
    argv = ["export", "--instrument", BTC, "--start", START.isoformat(), "--end", END.isoformat(), "--lake", url,
            "--out", str(out), "--include-flagged", "--quiet"]
    assert cli_main(argv) == 0
    assert pq.read_table(out).num_rows == 120
    assert cli_main(["plot", "--instrument", BTC, "--hour", START.isoformat(), "--lake", url,
                     "--out", str(tmp_path / "btc.png")]) == 0
    assert (tmp_path / "btc.png").read_bytes()[:4] == b"\x89PNG"
    assert cli_main(["plot", "--tape", "--instrument", BTC, "--hour", START.isoformat(), "--lake", url]) == 2
    assert f"has no tape of {BTC}" in capsys.readouterr().err


def test_object_storage_errors_name_the_url(shipped, monkeypatch):
    _, url = shipped
    with pytest.raises(ReadError, match=f"unknown instrument {ETH} in lake {url}.*it holds: {BTC}"):
        read_books(ETH, START, END, lake=url)
    with pytest.raises(ReadError, match="not a valid bucket name"):
        read_books(BTC, START, END, lake="s3://A_B/lake")
    monkeypatch.setenv("L2_LAKE_URL", url)  # the default lake when no lake= is given
    assert read_books(BTC, START, END).num_rows == 120
