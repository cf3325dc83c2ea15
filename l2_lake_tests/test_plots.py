"""The figures of `l2_lake.pictures.plots`, rendered from planted lakes and decoded again: valid PNGs of
the expected size and weight, not blank, with the colours that carry their meaning."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from l2_lake.pictures.plots import (
    MARKERS,
    STATUS_COLORS,
    HourHealth,
    _heatmap,
    health_status,
    hour_figure,
    hour_health,
    lake_health_figure,
    plot_hour_file,
    render_hour,
)
from l2_lake.quality.stats_cache import read_hour
from l2_lake.quality.verdicts import COVERAGE, NO_GAPS, SCHEMA_VALID, Verdict, hour_verdicts
from l2_lake.research.read import ReadError, read_books
from l2_lake.store.home import LocalHome
from l2_lake.tiers.curated import PARQUET_SCHEMA, records_to_table
from l2_lake.tiers.features import book_features
from l2_lake.tiers.source import HomeLake
from l2_pipeline_tests.lake_factory import (
    BTC,
    ETH,
    event,
    hour_at,
    make_record,
    make_records,
    ms,
    plant_good_hour,
    with_gap,
    write_hour,
)

HOUR = hour_at(0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTC hour 0: 1800 records of 25 levels, a gap marker at minute 30 and a minute without records
    after it, then a reconnect at minute 40 and its resync; BTC hour 1: a good hour."""
    root = tmp_path_factory.mktemp("lake")
    records = make_records(BTC, HOUR, depth=25)
    records, events = with_gap(records, 900, BTC, HOUR)
    del records[901:930]
    events += [
        event(BTC, "reconnect", HOUR + timedelta(minutes=40), reason="closed", attempt=1, delay_s=0.5),
        event(BTC, "resync_start", HOUR + timedelta(minutes=41), reason="reconnect", seqId=7),
        event(BTC, "resync_done", HOUR + timedelta(minutes=41, seconds=30), how="ws_snapshot", seqId=8,
              reason="reconnect"),
    ]
    write_hour(root, BTC, HOUR, records, events=events)
    plant_good_hour(root, BTC, hour_at(1))
    return root


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def decoded(png: bytes) -> np.ndarray:
    """RGB pixels in [0, 1], asserted not blank: contrast and several distinct colours."""
    rgb = imread(BytesIO(png))[..., :3]
    assert rgb.std() > 0.05
    packed = (rgb * 255).round().astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
    assert len(np.unique(packed)) >= 8
    return rgb


def pixels_of(rgb: np.ndarray, color: str, tolerance: float = 6 / 255) -> int:
    return int((np.abs(rgb - np.array(to_rgb(color))) <= tolerance).all(axis=-1).sum())


def assert_image(png: bytes, width: tuple[int, int], height: tuple[int, int], kb: tuple[int, int] = (10, 300)):
    w, h = png_size(png)
    assert width[0] <= w <= width[1] and height[0] <= h <= height[1], (w, h)
    assert kb[0] * 1024 <= len(png) <= kb[1] * 1024, len(png)


def test_hour_figure_of_a_planted_hour(lake: Path) -> None:
    books = read_books(BTC, HOUR, hour_at(1), lake=lake, include_flagged=True)
    events = HomeLake(LocalHome(lake)).hour_events(BTC, HOUR)
    assert {e["type"] for e in events} == {"gap", "resync_start", "resync_done", "reconnect"}
    png = hour_figure(books, book_features(books), events, BTC, HOUR)
    assert_image(png, (1100, 1250), (800, 950), kb=(10, 150))
    rgb = decoded(png)
    assert pixels_of(rgb, MARKERS["reconnect"][0], 20 / 255) > 50  # a marker line down the three panels
    assert pixels_of(rgb, MARKERS["gap"][0], 20 / 255) > 50


def test_render_hour_reads_books_features_and_events(lake: Path) -> None:
    png = render_hour(BTC, hour_at(1) + timedelta(minutes=20), lake=lake)  # any time in the hour
    assert_image(png, (1100, 1250), (800, 950), kb=(10, 150))
    decoded(png)
    empty = render_hour(BTC, "2026-11-20T05:00Z", lake=lake)  # no file: the "no record" figure
    assert_image(empty, (1100, 1250), (300, 600), kb=(5, 150))
    with pytest.raises(ReadError, match="unknown instrument"):
        render_hour(ETH, HOUR, lake=lake)
    with pytest.raises(ReadError, match="not a time"):
        render_hour(BTC, "yesterday", lake=lake)


def test_plot_hour_file_writes_the_png(lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = plot_hour_file(BTC, "2026-11-20T00:30Z", lake=lake, out=tmp_path / "figs" / "btc.png")
    assert out == tmp_path / "figs" / "btc.png"
    assert_image(out.read_bytes(), (1100, 1250), (800, 950), kb=(10, 150))
    monkeypatch.chdir(tmp_path)
    assert plot_hour_file(BTC, HOUR, lake=lake) == Path("BTC-USDT-SWAP_2026-11-20T00.png")
    assert (tmp_path / "BTC-USDT-SWAP_2026-11-20T00.png").read_bytes()[:8] == PNG_SIGNATURE


def test_hour_without_an_exact_book_renders() -> None:
    records = [make_record(BTC, ms(HOUR) + i * 60_000, seq=100 + i, gap=True) for i in range(5)]
    books = records_to_table(records)
    features = book_features(books)
    assert not any(features["exact"].to_pylist())
    events = [event(BTC, "reconnect", HOUR + timedelta(minutes=3), reason="closed", attempt=1, delay_s=1.0)]
    png = hour_figure(books, features, events, BTC, HOUR)
    assert_image(png, (1100, 1250), (300, 600), kb=(5, 150))
    rgb = decoded(png)
    assert pixels_of(rgb, MARKERS["reconnect"][0], 20 / 255) > 50


def test_empty_hour_renders() -> None:
    books = PARQUET_SCHEMA.empty_table()
    png = hour_figure(books, book_features(books), [], BTC, HOUR)
    assert_image(png, (1100, 1250), (300, 600), kb=(5, 150))
    decoded(png)


def test_heatmap_bins_every_level_by_distance_from_mid() -> None:
    """Mean resting size per snapshot by bps from mid: bids below zero, asks above, every level once."""
    bids = [["9999", "1", "0", "1"], ["9998", "2", "0", "1"]]  # -1 and -2 bps from the mid 10000
    asks = [["10001", "3", "0", "1"], ["10002", "4", "0", "1"], ["10003", "5", "0", "1"]]
    records = [make_record(BTC, ms(HOUR) + i * 600_000, seq=10 + i, bids=bids, asks=asks) for i in range(3)]
    records.append(make_record(BTC, ms(HOUR) + 2_000_000, seq=20, gap=True, bids=bids, asks=asks))  # not exact
    heat = _heatmap(records_to_table(records), HOUR)
    assert heat is not None
    mean, span = heat
    assert span == 5
    half = mean.shape[0] // 2
    assert np.nansum(mean[:half]) == pytest.approx(3 * 3)  # 1 + 2 per snapshot, three exact snapshots
    assert np.nansum(mean[half:]) == pytest.approx(3 * 12)
    assert np.isfinite(mean).all(axis=0).sum() == 3  # time columns without an exact snapshot are NaN


def test_health_status_is_the_worst_verdict() -> None:
    def v(name: str, passed: bool, warn: bool = False) -> Verdict:
        return Verdict(name, passed, warn, "")

    assert health_status([]) == "missing"
    assert health_status([v(NO_GAPS, True, True), v(COVERAGE, True)]) == "passed"
    assert health_status([v(NO_GAPS, False, True), v(COVERAGE, True)]) == "warning"
    assert health_status([v(NO_GAPS, False, True), v(COVERAGE, False)]) == "failed"


def lake_cells(lake: Path) -> list[HourHealth]:
    cells = []
    for hour in (hour_at(0), hour_at(1)):
        read = read_hour(lake, BTC, hour, 2.0)
        cells.append(hour_health(BTC, hour, hour_verdicts(read.stats, read.error, 95.0)))
    return cells


def test_hour_health_from_planted_hours(lake: Path) -> None:
    gap_hour, good_hour = lake_cells(lake)
    assert (gap_hour.status, gap_hour.gaps, gap_hour.failed_checks) == ("warning", 1, (NO_GAPS,))
    assert gap_hour.coverage_pct == pytest.approx(100 * 1771 / 1800, abs=0.01)
    assert (good_hour.status, good_hour.gaps, good_hour.coverage_pct) == ("passed", 0, 100.0)


def test_lake_health_figure_shows_each_status(lake: Path) -> None:
    hours = [hour_at(i) for i in range(6)]
    cells = [*lake_cells(lake),
             HourHealth(ETH, hour_at(2), "failed", 41.5, 0, (COVERAGE, SCHEMA_VALID)),
             HourHealth(ETH, hour_at(3), "passed", 100.0, 0, ())]  # the rest of the grid: missing
    png = lake_health_figure(cells, [BTC, ETH], hours)
    assert_image(png, (1100, 1250), (250, 600), kb=(5, 150))
    rgb = decoded(png)
    for status in ("passed", "warning", "failed", "missing"):
        assert pixels_of(rgb, STATUS_COLORS[status]) > 2000, status


def test_lake_health_figure_of_many_instruments_and_hours() -> None:
    instruments = [f"C{i:02d}X-USDT-SWAP" for i in range(50)]
    hours = [hour_at(i) for i in range(120)]
    statuses = ("passed", "warning", "failed", "missing")
    cells = [HourHealth(inst, hour, statuses[(i * 7 + j) % 11 % 4], 99.0, 0, ())
             for i, inst in enumerate(instruments) for j, hour in enumerate(hours)]
    png = lake_health_figure(cells, instruments, hours)
    assert_image(png, (1100, 1250), (800, 950))
    rgb = decoded(png)
    assert pixels_of(rgb, STATUS_COLORS["failed"]) > 10_000
    assert pixels_of(rgb, STATUS_COLORS["missing"]) > 10_000


def test_figures_render_in_threads(lake: Path) -> None:
    """No pyplot, no shared state: concurrent renders (threads of a Dagster process) give the same bytes."""
    cells = lake_cells(lake)
    hours = [hour_at(0), hour_at(1)]
    alone = lake_health_figure(cells, [BTC], hours)
    with ThreadPoolExecutor(3) as pool:
        renders = list(pool.map(lambda _: lake_health_figure(cells, [BTC], hours), range(3)))
    assert renders == [alone] * 3
