"""The lake walker: bounds, order, foreign names ignored, and directories it cannot list."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from l2_lake.format import layout
from l2_lake.store import lake_walk

BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"


def _plant(data_dir: Path, inst_id: str, hour: datetime, kinds=("records",)) -> None:
    paths = {
        "records": layout.records_path(data_dir, inst_id, hour),
        "events": layout.events_path(data_dir, inst_id, hour),
        "archive": layout.archive_path(data_dir, inst_id, hour),
    }
    for kind in kinds:
        paths[kind].parent.mkdir(parents=True, exist_ok=True)
        paths[kind].write_bytes(b"")


def _hour(day: int, hh: int) -> datetime:
    return datetime(2026, 11, day, hh, tzinfo=UTC)


def test_bounds_are_after_exclusive_until_inclusive_across_days(tmp_path: Path) -> None:
    for day, hh in [(20, 22), (20, 23), (21, 0), (21, 1), (22, 5)]:
        _plant(tmp_path, BTC, _hour(day, hh), kinds=("records", "events"))
    _plant(tmp_path, ETH, _hour(21, 0), kinds=("archive",))
    found = list(lake_walk.iter_hour_files(tmp_path, BTC, after=_hour(20, 23), until=_hour(21, 1)))
    assert [(f.hour, f.kind) for f in found] == [
        (_hour(21, 0), "events"), (_hour(21, 0), "records"), (_hour(21, 1), "events"), (_hour(21, 1), "records"),
    ]
    everything = list(lake_walk.iter_hour_files(tmp_path))
    assert [f.inst_id for f in everything].count(ETH) == 1 and len(everything) == 11
    eth_archive = layout.archive_path(tmp_path, ETH, _hour(21, 0))
    assert lake_walk.hour_files(tmp_path, ETH) == {_hour(21, 0): {"archive": eth_archive}}


def test_foreign_names_are_ignored(tmp_path: Path) -> None:
    _plant(tmp_path, BTC, _hour(21, 3))
    inst_dir = layout.raw_root(tmp_path) / BTC
    (inst_dir / "2026-11-31").mkdir()  # not a date
    (inst_dir / "2026-11-21" / "notes.txt").write_text("x")
    (inst_dir / "2026-11-21" / "24.jsonl").write_text("x")
    (layout.raw_root(tmp_path) / "btc-usdt-swap").mkdir()
    assert [f.hour for f in lake_walk.iter_hour_files(tmp_path)] == [_hour(21, 3)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any directory")
def test_unreadable_day_raises_by_default_and_is_reported_when_asked(tmp_path: Path) -> None:
    _plant(tmp_path, BTC, _hour(20, 1))
    _plant(tmp_path, BTC, _hour(21, 1))
    bad = layout.hour_dir(tmp_path, BTC, _hour(20, 1))
    bad.chmod(0)
    try:
        with pytest.raises(PermissionError):
            list(lake_walk.iter_hour_files(tmp_path, BTC))
        skipped: list[Path] = []
        found = list(lake_walk.iter_hour_files(tmp_path, BTC, on_unreadable=lambda p, exc: skipped.append(p)))
        assert skipped == [bad] and [f.hour for f in found] == [_hour(21, 1)]
    finally:
        bad.chmod(0o755)


def test_first_hour_counts_the_tape_and_its_archive(tmp_path: Path) -> None:
    assert lake_walk.first_hour(tmp_path) is None
    _plant(tmp_path, BTC, _hour(21, 3))
    tape_archive = layout.archive_path(tmp_path, ETH, _hour(20, 7), layout.TAPE_PREFIX)
    tape_archive.parent.mkdir(parents=True)
    tape_archive.write_bytes(b"")
    assert tape_archive.name == "07.parquet"
    assert lake_walk.first_hour(tmp_path) == _hour(20, 7)  # a tape-only instrument's hours count
    found = list(lake_walk.iter_hour_files(tmp_path, ETH, prefix=layout.TAPE_PREFIX))
    assert [(f.hour, f.kind) for f in found] == [(_hour(20, 7), "archive")]


def test_a_parquet_hour_file_is_the_tapes_only(tmp_path: Path) -> None:
    stray = layout.hour_dir(tmp_path, BTC, _hour(21, 3)) / "03.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"")
    assert layout.parse_hour_file(stray) is None
    assert not list(lake_walk.iter_hour_files(tmp_path, BTC))
