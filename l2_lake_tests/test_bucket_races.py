"""Publish, then delete, with no window in between (issue: lake integrity, item 9): a pipeline step in a
bucket publishes nothing when a staged input changed meanwhile, and a collector's merge that lands
between the step's check and its delete is never deleted (`If-Match`). Against moto's S3 server as a
process on loopback."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector_tests.s3_server import S3Server, s3_env
from l2_lake.store.home import StoreError
from l2_lake.store.s3 import LakeUrl, S3Store
from l2_lake.store.tree import ObjectTree, hour_paths

BTC = "BTC-USDT-SWAP"
H0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
PATHS = {kind: path.as_posix() for kind, path in hour_paths(Path(""), BTC, H0).items()}
HOUR = b'{"n":1}\n{"n":2}\n'
MERGED = HOUR + b'{"n":3, "a late line a collector merged in"}\n'


class MergeBeforeDelete(S3Store):
    """The real client; a shipper's merge lands right before the step's first delete."""

    def delete_if_unchanged(self, relative: str, version: str) -> bool:
        self.write_verified(relative, MERGED, {}, "application/x-ndjson")
        return super().delete_if_unchanged(relative, version)


def archive_in(workspace: Path) -> None:
    """What the archive step does to the staged hour: a new `.jsonl.gz`, the `.jsonl` removed."""
    (workspace / PATHS["archive"]).write_bytes(b"an archive")
    (workspace / PATHS["records"]).unlink()


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    s3_env(monkeypatch, s3_server.endpoint)
    name = s3_server.create_bucket()
    S3Store(LakeUrl(name, "lake")).write_verified(PATHS["records"], HOUR, {}, "application/x-ndjson")
    return name


def test_a_step_publishes_nothing_when_its_input_changed_meanwhile(bucket: str, tmp_path: Path) -> None:
    store = S3Store(LakeUrl(bucket, "lake"))
    tree = ObjectTree(store, tmp_path / "work")
    with pytest.raises(StoreError, match="nothing was published"), \
            tree.hour_workspace(BTC, H0, (("records",),)) as workspace:
        archive_in(workspace)
        store.write_verified(PATHS["records"], MERGED, {}, "application/x-ndjson")  # the shipper's merge
    assert store.read(PATHS["records"]) == MERGED
    assert store.read(PATHS["archive"]) is None


def test_a_merge_between_the_check_and_the_delete_is_kept(bucket: str, tmp_path: Path) -> None:
    tree = ObjectTree(MergeBeforeDelete(LakeUrl(bucket, "lake")), tmp_path / "work")
    with pytest.raises(StoreError, match="changed while this step worked"), \
            tree.hour_workspace(BTC, H0, (("records",),)) as workspace:
        archive_in(workspace)
    assert tree.store.read(PATHS["records"]) == MERGED  # the merged lines survive; the step runs again on them


CURATED = "curated/okx/l2_perps/instId=BTC-USDT-SWAP/date=2026-11-20/hour=10/data.parquet"


def curate_in(workspace: Path, body: bytes) -> None:
    """What the curated step does: a new derived object, its source left alone."""
    (workspace / CURATED).parent.mkdir(parents=True, exist_ok=True)
    (workspace / CURATED).write_bytes(body)


def test_a_step_run_again_publishes_its_identical_output_again(bucket: str, tmp_path: Path) -> None:
    """A step repeated on the same inputs (a Celery task redelivered after its worker died, a retried run)
    finds its output already published with the same bytes: that is success, not another writer."""
    tree = ObjectTree(S3Store(LakeUrl(bucket, "lake")), tmp_path / "work")
    for _ in range(2):
        with tree.hour_workspace(BTC, H0, (("records",),)) as workspace:
            curate_in(workspace, b"parquet bytes")
    assert tree.store.read(CURATED) == b"parquet bytes"
    with pytest.raises(StoreError, match="written by another writer"), \
            tree.hour_workspace(BTC, H0, (("records",),)) as workspace:
        curate_in(workspace, b"other bytes")  # different bytes there: still another writer's, kept
    assert tree.store.read(CURATED) == b"parquet bytes"
