"""Shipping a closed hour to object storage: upload + verify-read MB/s through boto3 and pyarrow.fs,
against moto's S3 server on loopback, next to the local gzip archive step on the same hour.

For each object size (gzip MB, default ~4 and ~40) the run makes an hour-like JSONL (400-level
records whose sizes and order counts vary like a real book's, so it compresses about 4x, not the
simulator's 18x), then, in the same run and best of `--repeat`:
- local archive step: `l2_lake.format.digests.gzip_verified` (igzip level 3, then decompress and compare sha256 and
  line count: what `l2_lake.tiers.archive` does, in memory);
- boto3 (`l2_lake.store.s3.S3Store`): PutObject with ChecksumSHA256 and user metadata, then GET
  the whole object and compare its sha256;
- pyarrow.fs.S3FileSystem: `open_output_stream` (with metadata) + `open_input_stream` read and sha256;
- the shipper end to end (`Shipper.ship_once` on a spool holding that hour: gzip + verify, HEAD, PUT,
  GET + compare, remove the local file), through boto3.
MB/s are of the object (gzip) bytes; "x local" is the step's time over the local archive step's.
The server is moto (Python, in memory), so absolute rates say more about it than about a real store;
the ratios between clients and to the local step are what this is for. It also reports whether a
client's user metadata arrives (a HEAD through boto3 after the pyarrow upload).
With `--tape FILE` (a tape hour), it also measures the CPU of shipping that hour as the shipper does
(as it is) against making its Parquet form (`tape_columns.encode_isolated`, the pipeline's archive step).
Usage: `python -m bench.ship [--sizes 4,40] [--repeat 3] [--tape raw/okx/l2_tape/…/HH.jsonl]`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from collector.ship import Shipper
from collector_tests.s3_server import S3Server, start_s3_server
from l2_lake.format import layout
from l2_lake.format.digests import gzip_verified
from l2_lake.store.s3 import LakeUrl, S3Store

INST = "BTC-USDT-SWAP"
GZIP_RATIO = 3.9  # of make_source's lines, measured


def record_line(rng: random.Random, ts: str) -> bytes:
    mid = 97_000 + rng.randint(-5_000, 5_000) / 10

    def side(sign: int) -> list[list[str]]:
        return [[f"{mid + sign * 0.1 * (k + 1):.1f}", f"{rng.randint(1, 400_000) / 100:g}", "0",
                 str(rng.randint(1, 60))] for k in range(400)]

    return orjson.dumps({"timestamp_utc": ts, "exchange": "okx", "market": "perp", "channel": "books",
                         "instId": INST, "bids_top400": side(-1), "asks_top400": side(1),
                         "seqId": rng.randint(1, 1 << 40)}) + b"\n"


def make_source(gzip_mb: float, seed: int = 1) -> bytes:
    """Hour-like JSONL that gzips to about `gzip_mb` MB: lines drawn from a pool of distinct random
    books, never one of the last few again (gzip's 32 KB window then finds no copy of a whole line)."""
    rng = random.Random(seed)
    pool = [record_line(rng, f"2026-11-20T10:{i // 60 % 60:02d}:{i % 60:02d}.000Z") for i in range(240)]
    out: list[bytes] = []
    size, recent = 0, [-1, -1, -1]
    while size < gzip_mb * 1e6 * GZIP_RATIO:
        i = rng.randrange(len(pool))
        if i in recent:
            continue
        recent = [*recent[1:], i]
        out.append(pool[i])
        size += len(pool[i])
    return b"".join(out)


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def boto3_roundtrip(store: S3Store, key: str, body: bytes, sha: str) -> None:
    store.write_verified(key, body, {"content-sha256": sha}, "application/gzip", sha256_hex=sha)


def pyarrow_fs(server: S3Server):  # -> pyarrow.fs.S3FileSystem
    from pyarrow import fs

    return fs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                           endpoint_override=server.endpoint.removeprefix("http://"))


def pyarrow_roundtrip(s3, path: str, body: bytes, sha: str) -> None:
    # compression=None: the default ("detect") would gzip a `.gz` name's bytes again on the way up
    with s3.open_output_stream(path, compression=None,
                               metadata={"x-amz-meta-sha256": sha, "Content-Type": "application/gzip"}) as out:
        out.write(body)
    digest = hashlib.sha256()
    with s3.open_input_stream(path, compression=None) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == sha, "pyarrow read back other bytes"


def shipper_roundtrip(server: S3Server, bucket: str, root: Path, source: bytes, n: int) -> float:
    """Seconds of one `Shipper.ship_once` that ships the hour (plus its gzip) from a fresh spool."""
    spool = root / f"spool{n}"
    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    path = layout.records_path(spool, INST, hour)
    path.parent.mkdir(parents=True)
    path.write_bytes(source)
    now_ms = int(hour.timestamp() * 1000) + 3 * 3_600_000
    shipper = Shipper(spool, f"s3://{bucket}/ship{n}", store_factory=lambda url: S3Store(url))
    shipper.store()  # the client is made once per process in the collector: not timed
    start = time.perf_counter()
    shipper.ship_once(now_ms)
    seconds = time.perf_counter() - start
    assert not path.exists() and shipper.backlog.shipped_files == 1, "the shipper did not ship the hour"
    return seconds


def cpu_seconds() -> float:
    """CPU of this process and of its children that have ended (moto's server runs on: not counted)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def tape_costs(bucket: str, root: Path, tape: bytes, repeat: int) -> tuple[float, float, float, float]:
    """Best-of-`repeat` (wall, CPU) seconds of shipping one tape hour as it is (`Shipper.ship_once`:
    hash, PUT, GET + compare, remove), and of making its Parquet form in a child process
    (`tape_columns.encode_isolated`, what the shipper did before and the pipeline's archive step does)."""
    from l2_lake.format import tape_columns

    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    ships, encodes = [], []
    for n in range(repeat):
        spool = root / f"tape-spool{n}"
        path = layout.tape_path(spool, INST, hour)
        path.parent.mkdir(parents=True)
        path.write_bytes(tape)
        shipper = Shipper(spool, f"s3://{bucket}/tape{n}", store_factory=lambda url: S3Store(url))
        shipper.store()
        wall, cpu = time.perf_counter(), cpu_seconds()
        shipper.ship_once(int(hour.timestamp() * 1000) + 3 * 3_600_000)
        ships.append((time.perf_counter() - wall, cpu_seconds() - cpu))
        assert not path.exists() and shipper.backlog.shipped_files == 1, "the shipper did not ship the tape hour"
        wall, cpu = time.perf_counter(), cpu_seconds()
        tape_columns.encode_isolated(tape)
        encodes.append((time.perf_counter() - wall, cpu_seconds() - cpu))
    (ship_wall, ship_cpu), (encode_wall, encode_cpu) = min(ships), min(encodes)
    return ship_wall, ship_cpu, encode_wall, encode_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,40", help="gzip object sizes in MB (default 4,40)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tape", type=Path, help="a tape hour file (`{HH}.jsonl` of raw/okx/l2_tape): also "
                        "measure shipping it as it is against making its Parquet form")
    args = parser.parse_args(argv)
    tape_row = None
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = start_s3_server(root)
        try:
            os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint})
            bucket = server.create_bucket()
            store = S3Store(LakeUrl(bucket, "bench"))
            s3 = pyarrow_fs(server)
            rows = []
            metadata_arrives = None
            for n, size in enumerate(sizes):
                source = make_source(size)
                body, _ = gzip_verified((source,), "10.jsonl")
                sha = hashlib.sha256(body).hexdigest()
                mb = len(body) / 1e6
                local = best_of(args.repeat, lambda s=source: gzip_verified((s,), "10.jsonl"))
                b3 = best_of(args.repeat, lambda k=f"boto3/{n}.jsonl.gz", b=body, h=sha:
                             boto3_roundtrip(store, k, b, h))
                pa = best_of(args.repeat, lambda p=f"{bucket}/pyarrow/{n}.jsonl.gz", b=body, h=sha:
                             pyarrow_roundtrip(s3, p, b, h))
                if metadata_arrives is None:
                    raw = store.raw_client().head_object(Bucket=bucket, Key=f"pyarrow/{n}.jsonl.gz")
                    metadata_arrives = raw.get("Metadata", {}).get("sha256") == sha
                ship = min(shipper_roundtrip(server, bucket, root, source, n * 100 + r) for r in range(args.repeat))
                rows.append((size, len(source) / 1e6, mb, local, b3, pa, ship))
            if args.tape:
                tape_row = tape_costs(bucket, root, args.tape.read_bytes(), args.repeat)
        finally:
            server.kill()
    print(f"objects: gzip of hour-like JSONL (~{GZIP_RATIO}x compressible); server: moto on loopback; "
          f"best of {args.repeat}")
    print(f"{'object':>16} {'step':36} {'seconds':>8} {'MB/s':>7} {'x local':>8}")
    for _size, jsonl_mb, mb, local, b3, pa, ship in rows:
        label = f"{mb:.1f} MB gz"
        for step, seconds in (("local gzip + verify (archive step)", local), ("boto3 PUT + GET verify", b3),
                              ("pyarrow.fs write + read verify", pa), ("Shipper.ship_once (boto3, e2e)", ship)):
            print(f"{label:>16} {step:36} {seconds:>8.3f} {mb / seconds:>7.1f} {seconds / local:>7.2f}x")
            label = f"({jsonl_mb:.0f} MB jsonl)" if step.startswith("local") else ""
        print(f"{'':>16} boto3 / pyarrow.fs throughput: {pa / b3:.2f}x")
    print(f"pyarrow.fs user metadata (x-amz-meta-sha256) stored: {'yes' if metadata_arrives else 'no'}")
    if tape_row:
        ship_wall, ship_cpu, encode_wall, encode_cpu = tape_row
        print(f"tape hour {args.tape} ({args.tape.stat().st_size / 1e6:.1f} MB), best of {args.repeat}:")
        print(f"  shipped as it is (Shipper.ship_once): {ship_wall:.2f} s wall, {ship_cpu:.2f} s CPU")
        print(f"  its Parquet form (encode_isolated):   {encode_wall:.2f} s wall, {encode_cpu:.2f} s CPU "
              f"= {encode_cpu / ship_cpu:.1f}x the CPU of shipping it as it is")


if __name__ == "__main__":
    main()
