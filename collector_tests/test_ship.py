"""Shipping closed hours to object storage (collector/ship.py) against a real S3 API: moto's server as
a process on loopback (collector_tests/s3_server.py), with real faults: the server killed during a
large upload and started again, paused (a hung store), and a fault proxy in front of it for a 500 on
PUT, a slow GET and a corrupted GET body. Every check that something was shipped compares the
object's (decompressed) bytes with the original file's bytes."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from collector.config import CollectorConfig, ConfigError, load_config
from collector.ship import (
    CLAIM_FRESH_S,
    STALE_MAX_AGE_S,
    WRITERS_PREFIX,
    ShipDeferred,
    Shipper,
    WriterGate,
    closed_until,
)
from collector.writer import BackgroundWriter
from collector_tests.harness import (
    hour_boundary_soon,
    start_collector,
    start_simulator,
    stop_process,
    verify_lake,
    wait_for,
)
from collector_tests.s3_server import S3Server, s3_env
from l2_lake.format import hour_content, layout
from l2_lake.format.backlog import STATE_NAME, read_backlog_file
from l2_lake.format.digests import CHUNK, count_lines, digest_parts, gzip_verified, same_at
from l2_lake.format.record import parse_ts_ms
from l2_lake.store import lake_walk
from l2_lake.store.hour_files import LakeWriter
from l2_lake.store.s3 import LakeUrl, S3Store, StoreError, parse_lake_url

BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"
H0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
HOUR_MS = 3_600_000


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def lines(hour: datetime, n: int, seed: int = 0, width: int = 200) -> bytes:
    """`n` JSONL records stamped inside `hour` (what the shipper sees: bytes ending in newlines)."""
    out = []
    for i in range(n):
        ts = hour + timedelta(milliseconds=i * 2000 + seed)
        pad = hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() * (width // 64 + 1)
        out.append(orjson.dumps({"timestamp_utc": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
                                 "instId": BTC, "pad": pad[:width]}) + b"\n")
    return b"".join(out)


def plant(spool: Path, inst: str, hour: datetime, kind: str, data: bytes) -> Path:
    path = {"records": layout.records_path, "events": layout.events_path,
            "archive": layout.archive_path}[kind](spool, inst, hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def key_of(prefix: str, path: Path, spool: Path) -> str:
    """The object a spool file is shipped to (a snapshot `{HH}.jsonl` as its archive; a tape hour as it is)."""
    if (path.name.endswith(layout.RECORDS_SUFFIX) and not path.name.endswith(layout.EVENTS_SUFFIX)
            and not layout.in_tape(path)):
        path = layout.archive_of(path)
    return f"{prefix}/{path.relative_to(spool).as_posix()}"


def get_object(server: S3Server, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    response = server.client().get_object(Bucket=bucket, Key=key)
    return response["Body"].read(), response["Metadata"]


def content_of(server: S3Server, bucket: str, key: str) -> bytes:
    body, _ = get_object(server, bucket, key)
    return hour_content.content_of(body, key)


def shipper(spool: Path, bucket: str, prefix: str = "lake", **kw) -> Shipper:
    store_kw = kw.pop("store_kw", {})
    return Shipper(spool, f"s3://{bucket}/{prefix}", store_factory=lambda url: S3Store(url, **store_kw), **kw)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> S3Server:
    s3_env(monkeypatch, s3_server.endpoint)
    return s3_server


# -- configuration -------------------------------------------------------------------------------------


def test_lake_url_parsing_and_config() -> None:
    assert parse_lake_url("s3://my-bucket") == LakeUrl("my-bucket", "")
    assert parse_lake_url("s3://my.bucket/a/b/") == LakeUrl("my.bucket", "a/b")
    assert LakeUrl("b", "p").key("raw/x") == "p/raw/x" and LakeUrl("b", "").key("raw/x") == "raw/x"
    assert CollectorConfig().lake_url == ""
    assert CollectorConfig(lake_url="s3://lake-eu/okx").lake_url == "s3://lake-eu/okx"
    for bad, why in (("/srv/lake", "not an s3:// URL"), ("gs://b/p", "not an s3:// URL"),
                     ("s3://Bad_Bucket/p", "not a valid bucket name"), ("s3://b", "not a valid bucket name"),
                     ("s3://bucket/a//b", "empty"), ("s3://bucket/../x", "'..'"),
                     ("s3://key:secret@bucket/p", "no credentials"), ("s3://bucket/p?x=1", "no credentials")):
        with pytest.raises(ConfigError, match=re.escape(why)) as info:
            CollectorConfig(lake_url=bad)
        assert str(info.value).startswith("lake_url: ")
    assert load_config({}, environ={"L2_LAKE_URL": "s3://from-env/p"}).lake_url == "s3://from-env/p"
    assert load_config({"lake_url": "s3://flag/p"}, environ={"L2_LAKE_URL": "s3://from-env/p"}).lake_url == "s3://flag/p"


def test_cli_flag_and_bad_url_exit_2(tmp_path: Path) -> None:
    from collector.cli import build_parser

    args = build_parser().parse_args(["run", "--lake-url", "s3://bucket/prefix"])
    assert args.lake_url == "s3://bucket/prefix"
    proc = subprocess.run([sys.executable, "-m", "collector", "run", "--data-dir", str(tmp_path / "d"),
                           "--lake-url", "http://bucket"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "lake_url:" in proc.stderr and "s3://" in proc.stderr, proc.stderr


def test_collector_without_lake_url_loads_no_client() -> None:
    code = ("import sys, collector.app, collector.cli; "
            "bad = [m for m in ('boto3', 'botocore', 'dagster', 'l2_pipeline') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_chunked_helpers() -> None:
    data = os.urandom(3 * CHUNK + 5).replace(b"\n", b"x") + b"a\nb\n" * 1000
    assert count_lines(data) == data.count(b"\n") == 2000
    assert same_at(data, 0, data[:CHUNK + 7]) and same_at(data, 0, data) and same_at(data, 9, b"")
    assert same_at(data, len(data) - CHUNK - 3, data[-CHUNK - 3:])
    assert not same_at(data, 0, data[:5] + b"!") and not same_at(data, 1, data) and not same_at(data[:5], 0, data)
    body, digest = gzip_verified((data[:100], data[100:]), "10.jsonl")
    assert gzip.decompress(body) == data and digest == digest_parts((data,))
    assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.size == len(data)


def test_store_lists_directories(env: S3Server) -> None:
    bucket = env.create_bucket()
    client = env.client()
    for key in ("p/raw/okx/l2_perps/BTC-USDT-SWAP/2026-11-20/10.jsonl.gz", "p/raw/okx/l2_perps/ETH-USDT-SWAP/x",
                "p/raw/okx/l2_perps/top-level-file", "other/raw/okx/l2_perps/SOL-USDT-SWAP/x"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    store = S3Store(LakeUrl(bucket, "p"))
    assert store.list_dirs("raw/okx/l2_perps") == [BTC, ETH]
    assert store.list_dirs("raw/okx/l2_perps/") == [BTC, ETH]
    assert store.list_dirs("curated") == []
    assert store.stat("raw/okx/l2_perps/ETH-USDT-SWAP/x").size == 1 and store.stat("nothing") is None
    with pytest.raises(StoreError, match="LIST s3://no-such-bucket-here/"):
        S3Store(LakeUrl("no-such-bucket-here", "")).list_dirs("raw")


# -- shipping and verification ----------------------------------------------------------------------------


def test_closed_hours_shipped_verified_and_removed(tmp_path: Path, env: S3Server) -> None:
    spool, bucket = tmp_path / "spool", env.create_bucket()
    h1, h2, h3 = H0, H0 + layout.HOUR, H0 + 2 * layout.HOUR
    now = h3 + timedelta(minutes=1)  # h2 ended 1 min ago: inside the grace; h3 is open
    originals = {
        plant(spool, BTC, h1, "records", lines(h1, 50)): lines(h1, 50),
        plant(spool, BTC, h1, "events", b'{"type":"gap"}\n'): b'{"type":"gap"}\n',
        plant(spool, ETH, h1, "records", b""): b"",  # an empty hour is an (empty) object too
    }
    archived = gzip.compress(lines(h1 - layout.HOUR, 30), 6)
    archive = plant(spool, ETH, h1 - layout.HOUR, "archive", archived)
    kept = [plant(spool, BTC, h2, "records", lines(h2, 5)), plant(spool, BTC, h3, "records", lines(h3, 5)),
            plant(spool, BTC, h3, "events", b"{}\n")]
    meta_file = spool / layout.META_PREFIX / f"{BTC}.json"
    meta_file.parent.mkdir(parents=True)
    meta_file.write_bytes(b'{"instId": "BTC-USDT-SWAP"}')
    assert closed_until(ms(now), timedelta(minutes=2)) == h1

    s = shipper(spool, bucket)
    s.ship_once(ms(now))

    for path, data in originals.items():
        key = key_of("lake", path, spool)
        assert content_of(env, bucket, key) == data, key
        body, metadata = get_object(env, bucket, key)
        assert metadata["sha256"] == hashlib.sha256(body).hexdigest()
        assert metadata["content-sha256"] == hashlib.sha256(data).hexdigest()
        assert metadata["lines"] == str(data.count(b"\n"))
        assert not path.exists(), f"{path} should be removed once verified"
    records_key = key_of("lake", layout.records_path(spool, BTC, h1), spool)
    assert get_object(env, bucket, records_key)[0] == gzip_like_pipeline(tmp_path, lines(h1, 50), "10.jsonl")
    body, _ = get_object(env, bucket, key_of("lake", archive, spool))
    assert body == archived and not archive.exists(), "an archived hour is shipped as it is"
    assert all(p.exists() for p in kept), "the open hour and an hour inside the grace stay"
    assert content_of(env, bucket, f"lake/meta/okx/instruments/{BTC}.json") == meta_file.read_bytes()
    assert meta_file.exists(), "metadata is copied, the local file kept"

    state = read_backlog_file(spool)
    assert state is not None and state["pending_hours"] == 0 and state["pending_files"] == 0
    assert state["shipped_files"] == 5 and state["consecutive_failures"] == 0
    assert state["lake_url"] == f"s3://{bucket}/lake"
    assert (spool / STATE_NAME).is_file()

    s.ship_once(ms(now + timedelta(minutes=2)))  # h2 is now closed; the metadata did not change
    assert not kept[0].exists() and content_of(env, bucket, key_of("lake", kept[0], spool)) == lines(h2, 5)
    assert s.backlog.shipped_files == 6


def test_tape_hours_ship_beside_the_snapshots(tmp_path: Path, env: S3Server) -> None:
    spool, bucket = tmp_path / "spool", env.create_bucket()
    records = plant(spool, BTC, H0, "records", lines(H0, 20))
    tape_data = b'{"t":"book","r":1,"state":"wait_ack"}\n' + lines(H0, 40, seed=3)
    tape = layout.tape_path(spool, BTC, H0)
    tape.parent.mkdir(parents=True)
    tape.write_bytes(tape_data)
    shipper(spool, bucket).ship_once(ms(H0 + layout.HOUR + timedelta(minutes=3)))
    assert content_of(env, bucket, key_of("lake", records, spool)) == lines(H0, 20)
    tape_key = key_of("lake", tape, spool)
    assert tape_key.startswith("lake/raw/okx/l2_tape/") and tape_key.endswith("/10.jsonl")
    body, metadata = get_object(env, bucket, tape_key)
    assert body == tape_data  # as it is: its Parquet form is the pipeline's book_tape_archive
    assert metadata["content-sha256"] == hashlib.sha256(tape_data).hexdigest()
    assert metadata["lines"] == str(tape_data.count(b"\n"))
    assert not records.exists() and not tape.exists()

    late = lines(H0 + timedelta(minutes=59), 3, seed=4)  # lines of the hour written after it was shipped
    tape.write_bytes(late)
    shipper(spool, bucket).ship_once(ms(H0 + layout.HOUR + timedelta(minutes=5)))
    body, metadata = get_object(env, bucket, tape_key)
    assert body == tape_data + late and metadata["content-sha256"] == hashlib.sha256(body).hexdigest()
    assert not tape.exists()


def gzip_like_pipeline(tmp: Path, data: bytes, name: str) -> bytes:
    """What l2_lake.tiers.archive writes for the same hour (igzip level 3, mtime 0, the .jsonl's name): the
    object is byte-identical to a locally archived hour."""
    from l2_lake.tiers.archive import _compress

    src, out = tmp / "pipeline-src.jsonl", tmp / "pipeline-out.jsonl.gz"
    src.write_bytes(data)
    with open(src, "rb") as f:
        _compress(f, out, name)
    return out.read_bytes()


class SpoolWatchingStore(S3Store):
    """The real client, noting whether the spool file still existed at each request for an hour's object
    (the writer claim, `Shipper.claim`, is not one)."""

    def __init__(self, url: LakeUrl, watched: list[Path], seen: list[tuple[str, bool]]) -> None:
        super().__init__(url)
        self.watched, self.seen = watched, seen

    def _note(self, op: str, relative: str) -> None:
        if not relative.startswith(WRITERS_PREFIX):
            self.seen.append((op, all(p.exists() for p in self.watched)))

    def _put(self, relative: str, *args, **kwargs) -> None:
        self._note("PUT", relative)
        super()._put(relative, *args, **kwargs)

    def read_digest(self, relative: str):
        self._note("GET", relative)
        return super().read_digest(relative)


def test_nothing_removed_before_the_object_reads_back_right(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             s3_server: S3Server, fault_proxy_factory) -> None:
    spool, bucket = tmp_path / "spool", s3_server.create_bucket()
    proxy = fault_proxy_factory(s3_server.port)
    s3_env(monkeypatch, proxy.endpoint)
    records = plant(spool, BTC, H0, "records", lines(H0, 200))
    original = records.read_bytes()
    seen: list[tuple[str, bool]] = []
    s = Shipper(spool, f"s3://{bucket}/p", store_factory=lambda url: SpoolWatchingStore(url, [records], seen))
    now = ms(H0) + 2 * HOUR_MS
    s.claim(now)  # the writer claim first: the corrupted reads below are the hour's
    # pass 1: PUT, the verify read gets other bytes; pass 2: the object is there but reads back wrong
    # (checked), so it is uploaded again, and that read is wrong too
    for corrupt in (1, 2):
        proxy.corrupt_gets = corrupt
        with pytest.raises(StoreError, match="verification"):
            s.ship_once(now)
        assert proxy.corrupt_gets == 0
        assert records.read_bytes() == original, "kept while the object does not read back right"
    assert s.backlog.failures == 2 and "verification" in (s.backlog.last_error or "")
    assert [op for op, _ in seen] == ["PUT", "GET", "GET", "PUT", "GET"]
    state = read_backlog_file(spool)
    assert state["pending_hours"] == 1 and state["oldest_pending_hour"] == "2026-11-20T10:00Z"
    assert state["pending_bytes"] == len(original) and "verification" in state["last_error"]
    s.ship_once(now)  # the object is already there with the right content: verified, then removed
    assert not records.exists()
    assert content_of(s3_server, bucket, f"p/{records.relative_to(spool).as_posix()}.gz") == original
    assert seen and all(present for _, present in seen), seen
    assert s.backlog.failures == 0 and s.backlog.pending_hours == 0


def test_500_on_put_retried_until_the_store_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    s3_server: S3Server, fault_proxy_factory) -> None:
    spool, bucket = tmp_path / "spool", s3_server.create_bucket()
    proxy = fault_proxy_factory(s3_server.port)
    s3_env(monkeypatch, proxy.endpoint)
    files = {plant(spool, BTC, H0, "records", lines(H0, 100)): lines(H0, 100),
             plant(spool, BTC, H0, "events", b'{"e":1}\n'): b'{"e":1}\n'}
    proxy.fail_puts = 5  # more than botocore's 3 attempts: the first pass fails, the second's retries absorb 2
    s = shipper(spool, bucket)
    with pytest.raises(StoreError, match="HTTP 500 InternalError"):
        s.ship_once(ms(H0) + 2 * HOUR_MS)
    assert all(p.read_bytes() == data for p, data in files.items())
    assert read_backlog_file(spool)["last_error"].startswith("PUT s3://")
    s.ship_once(ms(H0) + 2 * HOUR_MS)
    assert proxy.puts_failed == 5
    for path, data in files.items():
        assert not path.exists() and content_of(s3_server, bucket, key_of("lake", path, spool)) == data


def test_slow_get_times_out_and_drains_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server,
                                             fault_proxy_factory) -> None:
    spool, bucket = tmp_path / "spool", s3_server.create_bucket()
    proxy = fault_proxy_factory(s3_server.port)
    s3_env(monkeypatch, proxy.endpoint)
    path = plant(spool, BTC, H0, "records", lines(H0, 100))
    data = path.read_bytes()
    proxy.get_delay_s = 3.0
    s = shipper(spool, bucket, store_kw={"read_timeout": 1.0, "max_attempts": 1})
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"GET .*(timeout|Timeout)"):
        s.ship_once(ms(H0) + 2 * HOUR_MS)
    assert time.monotonic() - started < 10
    assert path.read_bytes() == data and s.backlog.pending_hours == 1
    proxy.get_delay_s = 0.0
    s.ship_once(ms(H0) + 2 * HOUR_MS)
    assert not path.exists() and content_of(s3_server, bucket, key_of("lake", path, spool)) == data


class SignalingStore(S3Store):
    """The real client; sets `putting` when a PUT of at least `big` bytes starts."""

    def __init__(self, url: LakeUrl, big: int, putting: threading.Event, **kw) -> None:
        super().__init__(url, **kw)
        self.big, self.putting = big, putting

    def _put_object(self, key, body, checksum, meta, content_type, condition) -> None:
        size = os.fstat(body.fileno()).st_size if hasattr(body, "fileno") else len(body)
        if size >= self.big:
            self.putting.set()
        super()._put_object(key, body, checksum, meta, content_type, condition)


def big_archive(hour: datetime, mb: int) -> bytes:
    """A `.jsonl.gz` of about `mb` MB that hardly compresses (random payloads): a large upload."""
    rng = os.urandom(mb * 750_000).hex()
    step = 400
    body = b"".join(orjson.dumps({"timestamp_utc": hour.strftime("%Y-%m-%dT%H:00:00.000Z"), "pad": rng[i:i + step]})
                    + b"\n" for i in range(0, len(rng), step))
    return gzip.compress(body, 1)


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_store_killed_or_hung_mid_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server_fn: S3Server,
                                         fault: str) -> None:
    """The server is SIGKILLed (down; restarted empty on the same port) or SIGSTOPped (hung) while a
    ~60 MB object is being uploaded: the pass fails, every spool file stays, and once the store is
    back the next pass ships everything, byte for byte."""
    server = s3_server_fn
    s3_env(monkeypatch, server.endpoint)
    spool, bucket = tmp_path / "spool", server.create_bucket()
    big = big_archive(H0, 60)
    files = {plant(spool, BTC, H0, "archive", big): big,
             plant(spool, BTC, H0, "events", b'{"e":1}\n'): b'{"e":1}\n',
             plant(spool, ETH, H0 + layout.HOUR, "records", lines(H0, 300)): lines(H0, 300)}
    putting = threading.Event()
    s = Shipper(spool, f"s3://{bucket}/lake", store_factory=lambda url: SignalingStore(
        url, len(big), putting, read_timeout=2.0, connect_timeout=2.0, max_attempts=2))
    failure: list[BaseException] = []

    def one_pass() -> None:
        try:
            s.ship_once(ms(H0) + 3 * HOUR_MS)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=one_pass)
    thread.start()
    assert putting.wait(60), "the large upload never started"
    time.sleep(0.05)
    server.kill() if fault == "kill" else server.pause()
    thread.join(60)
    assert not thread.is_alive() and failure and isinstance(failure[0], StoreError), failure
    assert str(failure[0]).startswith("PUT "), "the store went away during the large upload"
    assert all(p.read_bytes() == data for p, data in files.items()), "nothing removed before it was verified"
    assert s.backlog.pending_hours == 2 and s.backlog.failures == 1
    state = read_backlog_file(spool)
    assert state["pending_files"] == 3 and state["pending_bytes"] == sum(len(d) for d in files.values())
    assert state["oldest_pending_hour"] == "2026-11-20T10:00Z" and state["last_error"]

    with pytest.raises(StoreError):  # still down / hung: nothing changes
        s.ship_once(ms(H0) + 3 * HOUR_MS)
    assert all(p.exists() for p in files)
    if fault == "kill":
        server.start()
        server.create_bucket(bucket)  # moto keeps objects in memory: the restarted store is empty
    else:
        server.resume()
    s.ship_once(ms(H0) + 3 * HOUR_MS)
    for path, data in files.items():
        assert not path.exists()
        key = key_of("lake", path, spool)
        assert (get_object(server, bucket, key)[0] if path.name.endswith(".gz") else content_of(server, bucket, key)) \
            == data
    assert s.backlog.pending_hours == 0 and s.backlog.failures == 0


# -- merging, conflicts, bad files ---------------------------------------------------------------------------


def test_late_lines_and_interrupted_passes_are_merged_without_loss_or_duplicates(tmp_path: Path,
                                                                                   env: S3Server) -> None:
    spool, bucket = tmp_path / "spool", env.create_bucket()
    now = ms(H0) + 2 * HOUR_MS
    first, late = lines(H0, 20), lines(H0, 5, seed=1_000_000)
    events = plant(spool, BTC, H0, "events", first)
    records = plant(spool, BTC, H0, "records", first)
    s = shipper(spool, bucket)
    s.ship_once(now)
    # late lines reopened both files after they were shipped: appended to the objects
    plant(spool, BTC, H0, "events", late)
    plant(spool, BTC, H0, "records", late)
    s.ship_once(now)
    assert content_of(env, bucket, key_of("lake", events, spool)) == first + late
    assert content_of(env, bucket, key_of("lake", records, spool)) == first + late
    assert not events.exists() and not records.exists()
    # a pass that died after its PUT (the spool copy still there): no second copy of the lines
    plant(spool, BTC, H0, "events", late)
    s.ship_once(now)
    assert content_of(env, bucket, key_of("lake", events, spool)) == first + late and not events.exists()
    # a spool file that extends what the object holds replaces it (no duplicated prefix)
    h = H0 + layout.HOUR
    part = plant(spool, ETH, h, "events", first)
    s.ship_once(now + HOUR_MS)
    plant(spool, ETH, h, "events", first + late)
    s.ship_once(now + HOUR_MS)
    assert content_of(env, bucket, key_of("lake", part, spool)) == first + late


def test_two_collectors_on_one_url_conflict_instead_of_merging(tmp_path: Path, env: S3Server,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    bucket = env.create_bucket()
    a_spool, b_spool = tmp_path / "a", tmp_path / "b"
    a_data, b_data = lines(H0, 10), lines(H0, 10, seed=7)
    plant(a_spool, BTC, H0, "events", a_data)
    b_file = plant(b_spool, BTC, H0, "events", b_data)
    shipper(a_spool, bucket, collector_id="host-a").ship_once(ms(H0) + 2 * HOUR_MS)
    b = shipper(b_spool, bucket, collector_id="host-b")
    with caplog.at_level(logging.ERROR, logger="collector.ship"):
        b.ship_once(ms(H0) + 2 * HOUR_MS)
    assert b_file.read_bytes() == b_data, "kept"
    assert content_of(env, bucket, key_of("lake", b_file, b_spool)) == a_data, "not merged, not overwritten"
    assert b.backlog.stuck == (b_file.relative_to(b_spool).as_posix(),)
    assert any("host-a" in r.getMessage() and "own --lake-url prefix" in r.getMessage() for r in caplog.records)
    assert read_backlog_file(b_spool)["stuck_files"] == [b_file.relative_to(b_spool).as_posix()]


def test_an_archive_that_does_not_decompress_is_kept_and_the_rest_ships(tmp_path: Path, env: S3Server) -> None:
    spool, bucket = tmp_path / "spool", env.create_bucket()
    bad = plant(spool, BTC, H0, "archive", gzip.compress(lines(H0, 50))[:-20])  # truncated
    good = plant(spool, ETH, H0, "records", lines(H0, 50))
    s = shipper(spool, bucket)
    s.ship_once(ms(H0) + 2 * HOUR_MS)
    assert bad.exists() and not good.exists()
    assert s.backlog.stuck == (bad.relative_to(spool).as_posix(),) and s.backlog.pending_hours == 0
    s.ship_once(ms(H0) + 2 * HOUR_MS)  # logged once, not retried, not blocking anything
    assert bad.exists()


def test_an_hour_the_pipeline_is_archiving_waits(tmp_path: Path, env: S3Server) -> None:
    """l2_lake.tiers.archive holds a flock on the `.jsonl` while it compresses it: the shipper leaves that
    hour for the next pass (it stays in the backlog) and ships the others."""
    import fcntl

    spool, bucket = tmp_path / "spool", env.create_bucket()
    locked = plant(spool, BTC, H0, "records", lines(H0, 10))
    other = plant(spool, ETH, H0 + layout.HOUR, "records", lines(H0, 10))
    s = shipper(spool, bucket)
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        s.ship_once(ms(H0) + 3 * HOUR_MS)
    assert locked.exists() and not other.exists()
    assert s.backlog.pending_hours == 1 and s.backlog.oldest_hour == H0
    assert s.backlog.pending_bytes == locked.stat().st_size
    s.ship_once(ms(H0) + 3 * HOUR_MS)
    assert not locked.exists() and s.backlog.pending_hours == 0 and s.backlog.oldest_hour is None


def test_records_and_archive_both_in_the_spool(tmp_path: Path, env: S3Server) -> None:
    """The pipeline's archive step died between its rename and unlink: the .jsonl is shipped, an
    identical .gz removed; a .gz with other lines is moved aside (kept, never shipped over it)."""
    spool, bucket = tmp_path / "spool", env.create_bucket()
    data = lines(H0, 40)
    rec = plant(spool, BTC, H0, "records", data)
    arc = plant(spool, BTC, H0, "archive", gzip.compress(data))
    rec2 = plant(spool, ETH, H0, "records", data)
    arc2 = plant(spool, ETH, H0, "archive", gzip.compress(data[:100]))
    shipper(spool, bucket).ship_once(ms(H0) + 2 * HOUR_MS)
    assert not rec.exists() and not arc.exists() and not rec2.exists() and not arc2.exists()
    assert (arc2.parent / f".{arc2.name}.stale").is_file()
    assert content_of(env, bucket, key_of("lake", rec, spool)) == data
    assert content_of(env, bucket, key_of("lake", rec2, spool)) == data


# -- the writer thread's side --------------------------------------------------------------------------------


def test_writer_gate_holds_files_being_written_and_releases_quiet_ones(tmp_path: Path, env: S3Server) -> None:
    spool, bucket = tmp_path / "spool", env.create_bucket()
    clock = [ms(H0) + 10_000]
    store = LakeWriter(spool, clock_ms=lambda: clock[0])
    writer = BackgroundWriter(store, clock_ms=lambda: clock[0])
    gate = WriterGate(writer)
    store.record(BTC, ms(H0) + 1000, {"timestamp_utc": "x", "n": 1})
    store.event(BTC, "gap")
    path = layout.records_path(spool, BTC, H0)
    ended = H0 + layout.HOUR
    clock[0] = ms(H0) + HOUR_MS + 5 * 60_000
    assert path in gate.release_ended(ended), "first look: remembered, still open"
    store.record(BTC, ms(H0) + 2000, {"timestamp_utc": "y", "n": 2})  # a late line: it grew
    assert path in gate.release_ended(ended)
    open_now = gate.release_ended(ended)  # quiet since the previous look: closed
    assert path not in open_now and not open_now
    assert not gate.remove_if_unchanged(path, (1, 1)), "changed since it was read: kept"
    s = Shipper(spool, f"s3://{bucket}/w", store_factory=S3Store)
    s.ship_once(clock[0], open_now)
    assert not path.exists() and content_of(env, bucket, key_of("w", path, spool)).count(b"\n") == 2
    # a file the writer holds is neither shipped nor removed
    store.record(ETH, ms(H0) + 1000, {"n": 3})
    held = layout.records_path(spool, ETH, H0)
    s.ship_once(clock[0], frozenset({held}))
    assert held.exists()
    stat = held.stat()
    assert not gate.remove_if_unchanged(held, (stat.st_size, stat.st_mtime_ns))
    store.close()


# -- the running collector -----------------------------------------------------------------------------------


def live_records(data: Path, since: datetime) -> int:
    """Complete record lines the collector wrote since `since` (planted past hours left out)."""
    total = 0
    for f in lake_walk.iter_hour_files(data):
        if f.kind == "records" and f.hour >= since:
            with contextlib.suppress(FileNotFoundError):
                total += f.path.read_bytes().count(b"\n")
    return total


def newest_record_ms(data: Path) -> int | None:
    """The event time of the newest complete record line in the spool. Unlike a count of lines it only
    grows while the collector writes, even when the shipper removes a live hour that closed meanwhile."""
    newest = None
    for f in lake_walk.iter_hour_files(data):
        if f.kind == "records":
            with contextlib.suppress(FileNotFoundError):
                content = f.path.read_bytes()
                complete = content[:content.rfind(b"\n") + 1].splitlines()
                if complete:
                    ts = parse_ts_ms(orjson.loads(complete[-1])["timestamp_utc"])
                    newest = ts if newest is None else max(newest, ts)
    return newest


def status_fields(stderr: Path) -> list[dict[str, str]]:
    out = []
    for line in stderr.read_text(errors="replace").splitlines():
        if "event=status_process" in line:
            out.append(dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", line)))
    return out


@pytest.mark.e2e
def test_collector_keeps_capturing_while_the_store_hangs_and_is_down_then_drains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server_fn: S3Server) -> None:
    server = s3_server_fn
    s3_env(monkeypatch, server.endpoint)
    bucket = server.create_bucket()
    data = tmp_path / "spool"
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    h3, h4, h5 = (now - n * layout.HOUR for n in (3, 4, 5))
    paths = [plant(data, BTC, h3, "records", lines(h3, 300)), plant(data, BTC, h3, "events", b'{"type":"gap"}\n'),
             plant(data, BTC, h4, "records", lines(h4, 300)),
             plant(data, BTC, h5, "archive", gzip.compress(lines(h5, 300)))]
    planted = {p: p.read_bytes() for p in paths}
    server.pause()  # a hung store: connections accepted, nothing answers
    sim = start_simulator(tmp_path, BTC, "--interval-ms", "50")
    stderr = tmp_path / "collector.stderr"
    collector = start_collector(tmp_path, sim, data, BTC, "--lake-url", f"s3://{bucket}/lake")
    try:
        wait_for(lambda: live_records(data, now) >= 3, timeout=30, what="first records")

        def keeps_capturing(seconds: float) -> None:
            """A record at least every 0.5 s (cadence 0.2 s) while the store misbehaves."""
            last = newest_record_ms(data)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.5)
                newest = newest_record_ms(data)
                assert newest > last, "capture stalled while the store was hung or down"
                last = newest

        keeps_capturing(3.0)
        wait_for(lambda: any(int(f.get("ship_pending_hours", 0)) >= 3 for f in status_fields(stderr)),
                 timeout=10, what="the backlog in the status line")
        state = read_backlog_file(data)
        assert state["pending_hours"] >= 3 and state["oldest_pending_hour"] == (
            now - 5 * layout.HOUR).strftime("%Y-%m-%dT%H:00Z")
        server.kill()  # the hung request fails; then the store is down: refused
        wait_for(lambda: "event=ship_error" in stderr.read_text(), timeout=90, what="ship_error")
        keeps_capturing(2.0)
        assert all(p.read_bytes() == d for p, d in planted.items()), "nothing shipped, nothing removed"
        wait_for(lambda: any(int(f.get("ship_failures", 0)) >= 1 for f in status_fields(stderr)), timeout=10,
                 what="failures in the status line")

        server.start()
        server.create_bucket(bucket)
        wait_for(lambda: not any(p.exists() for p in planted), timeout=60, what="the backlog to drain")
        for path, original in planted.items():
            key = key_of("lake", path, data)
            got = get_object(server, bucket, key)[0] if path.name.endswith(".gz") else content_of(server, bucket, key)
            assert got == original, key
        # both at once: a live hour that closes meanwhile (the wall clock crossed an hour) is pending for a pass
        wait_for(lambda: status_fields(stderr)[-1].get("ship_pending_hours") == "0"
                 and (read_backlog_file(data) or {}).get("pending_hours") == 0, timeout=10,
                 what="an empty backlog in the status line and the backlog file")
        assert "event=ship_recovered" in stderr.read_text()
        keeps_capturing(1.0)
        assert stop_process(collector) < 5.0
        assert collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    assert "Traceback" not in stderr.read_text()
    shutil.rmtree(data, ignore_errors=True)


@pytest.mark.e2e
def test_an_hour_the_writer_still_writes_is_shipped_only_once_it_rolled_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    """The exchange clock runs 3 h behind the host's (so every record goes into an hour that ended long
    ago by the wall clock) and crosses an hour after ~5 s. Passes run every second, yet the hour is
    shipped only after the writer rolled over: one object, no merge, every record exact."""
    s3_env(monkeypatch, s3_server.endpoint)
    bucket = s3_server.create_bucket()
    boundary, start_at = hour_boundary_soon(5, hours_ago=3)
    before = boundary - layout.HOUR
    sim = start_simulator(tmp_path, BTC, "--interval-ms", "50", "--start-at", start_at)
    data = tmp_path / "spool"
    stderr = tmp_path / "collector.stderr"
    collector = start_collector(tmp_path, sim, data, BTC, "--lake-url", f"s3://{bucket}/lake")
    local = layout.records_path(data, BTC, before)
    key = key_of("lake", local, data)
    try:
        wait_for(lambda: local.exists() and local.stat().st_size > 0, timeout=30, what="records of the ended hour")
        assert "event=shipped" not in stderr.read_text(), "shipped while the writer was still appending"
        wait_for(lambda: not local.exists(), timeout=30, what="the hour shipped after the rollover")
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    text = stderr.read_text()
    assert "ship_merge" not in text and "ship_changed" not in text and "Traceback" not in text
    shipped = content_of(s3_server, bucket, key)
    assert shipped.count(b"\n") >= 10
    check = tmp_path / "check"  # the object's records as a lake of their own, held against the truth
    plant(check, BTC, before, "records", shipped)
    result = verify_lake(check, sim.truth_log)
    assert not result.wrong and result.exact == result.promised == shipped.count(b"\n")
    first, last = (datetime.fromisoformat(orjson.loads(line)["timestamp_utc"].replace("Z", "+00:00"))
                   for line in (shipped.splitlines()[0], shipped.splitlines()[-1]))
    assert before <= first and last < boundary and boundary - last < timedelta(seconds=1), "the hour is whole"


@pytest.mark.e2e
def test_sigterm_while_the_store_hangs_exits_promptly_and_keeps_the_spool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server_fn: S3Server) -> None:
    server = s3_server_fn
    s3_env(monkeypatch, server.endpoint)
    bucket = server.create_bucket()
    data = tmp_path / "spool"
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 2 * layout.HOUR
    path = plant(data, BTC, hour, "records", lines(hour, 2000, width=1000))
    original = path.read_bytes()
    server.pause()
    sim = start_simulator(tmp_path, BTC, "--interval-ms", "50")
    stderr = tmp_path / "collector.stderr"
    collector = start_collector(tmp_path, sim, data, BTC, "--lake-url", f"s3://{bucket}/lake")
    try:
        wait_for(lambda: any(f.get("ship_pending_hours") == "1" for f in status_fields(stderr)), timeout=30,
                 what="the backlog in the status line")
        time.sleep(1.0)  # the shipper's first request is now hanging on the paused store
        assert stop_process(collector) < 5.0, "SIGTERM must not wait for a hung upload"
        assert collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    assert path.read_bytes() == original, "the spool copy stays when its upload was abandoned"
    text = stderr.read_text()
    assert "event=stop" in text and "Traceback" not in text


def test_an_archive_moved_aside_is_removed_after_seven_days(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    s3_env(monkeypatch, s3_server.endpoint)
    day = tmp_path / "spool" / layout.RAW_PREFIX / "BTC-USDT-SWAP" / "2026-11-20"
    day.mkdir(parents=True)
    old = day / ".10.jsonl.gz.stale"
    old.write_bytes(b"x")
    then = time.time() - STALE_MAX_AGE_S - 60
    os.utime(old, (then, then))
    recent = day / ".11.jsonl.gz.stale"
    recent.write_bytes(b"y")
    shipper = Shipper(tmp_path / "spool", f"s3://{s3_server.create_bucket()}/lake")
    shipper.ship_once()
    assert not old.exists() and recent.exists()


# -- one writer per collector id (issue: lake integrity, item 3) --------------------------------------------


def test_a_second_collector_without_an_id_is_refused_not_duplicated(tmp_path: Path, s3_server: S3Server,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch, s3_server.endpoint)
    bucket = s3_server.create_bucket()
    first, standby = tmp_path / "first", tmp_path / "standby"  # a standby host given a copy of the config
    plant(first, BTC, H0, "records", lines(H0, 50))
    standby_hour = plant(standby, BTC, H0, "records", lines(H0, 50))
    now = ms(H0) + 2 * HOUR_MS
    shipper(first, bucket).ship_once(now)
    with pytest.raises(ShipDeferred, match="shipped to by another collector with no --collector-id"):
        shipper(standby, bucket).ship_once(now + 1000)
    assert standby_hour.exists()  # kept in the standby's spool, not appended to the object
    assert content_of(s3_server, bucket, f"lake/{layout.RAW_PREFIX.as_posix()}/{BTC}/2026-11-20/10.jsonl.gz") \
        == lines(H0, 50)
    shipper(first, bucket).claim(now + 2000)  # the first one restarted: the same host and spool
    shipper(standby, bucket).claim(now + 2000 + int(CLAIM_FRESH_S * 1000) + 1000)  # the first is gone: taken over


def test_a_collector_refuses_to_start_on_a_prefix_another_ships_to(tmp_path: Path, s3_server: S3Server,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch, s3_server.endpoint)
    bucket = s3_server.create_bucket()
    shipper(tmp_path / "other-host", bucket).claim(int(time.time() * 1000))
    out = subprocess.run([sys.executable, "-m", "collector", "run", "--data-dir", str(tmp_path / "spool"),
                          "--lake-url", f"s3://{bucket}/lake", "--ws-url", "ws://127.0.0.1:9",
                          "--rest-url", "http://127.0.0.1:9"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    refused = [line for line in out.stderr.splitlines() if "event=ship_refused" in line]
    assert len(refused) == 1 and "give each collector its own --collector-id" in refused[0]
    assert "Traceback" not in out.stderr
