"""Figures people look at: one instrument-hour of books, and the lake's health, as PNG bytes.

Pure (no Dagster): the Dagster assets embed the bytes as base64 PNG in Markdown metadata, and
`l2-collector plot` writes them to a file, so each image stays small (≈1200×900 px, ≤ 150 KB).
Drawn with matplotlib's object API on the Agg canvas, never pyplot: no global state, safe in the
threads of a Dagster process.

- `hour_figure(books, features, events, inst_id, hour)`: mid price and spread, depth within 25 and
  100 bps per side, and a liquidity heatmap (resting size by distance from mid over time), sharing a
  minutes-of-the-hour axis; gaps, checksum failures, resyncs and reconnects marked on every panel.
  Lines break at records that are not exact and where records are missing, never interpolated.
  `render_hour(inst_id, hour, lake=…)` reads all three inputs from a lake and draws it;
  `plot_hour_file` writes that PNG (`l2-collector plot`).
- `lake_health_figure(cells, instruments, hours)`: instruments × hours coloured by the worst check
  (`health_status` of the hour's `quality.Verdict`s, `hour_health` to build a cell), each cell
  naming the checks that failed (`2 gap`, `crc`, `cov 75%`, `schema`…) where it is wide enough.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter
from PIL import Image

from l2_lake.format import layout
from l2_lake.format.hours import parse_utc, utc
from l2_lake.format.record import parse_ts_ms
from l2_lake.quality.verdicts import (
    COVERAGE,
    HOUR_CHECKS,
    NO_CHECKSUM_FAILURES,
    NO_CROSSED_BOOKS,
    NO_GAPS,
    SCHEMA_VALID,
    TIMESTAMPS_VALID,
    Verdict,
    worst_status,
)
from l2_lake.research.read import ReadError, TimeLike, book_range, flagged
from l2_lake.tiers.features import book_features

DPI = 100
HOUR_SIZE = (12.0, 9.0)  # inches at DPI: 1200×900 px
HEALTH_WIDTH = 12.0
TIME_BINS = 180  # heatmap columns: 20 s each
DISTANCE_BINS = 50  # heatmap rows per side
BPS_RANGES = (2, 5, 10, 25, 50, 100, 200, 500)  # heatmap ±range: the smallest holding 98% of the levels
BID_COLOR, ASK_COLOR = "#1a9850", "#d73027"

# event kind → (colour, line style, label); records flag gaps and checksum failures too
MARKERS: dict[str, tuple[str, str, str]] = {
    "gap": ("#e4007c", "-", "gap"),
    "checksum_mismatch": ("#8c510a", "-", "checksum mismatch"),
    "resync_start": ("#ff7f00", "--", "resync start"),
    "resync_done": ("#1f78b4", ":", "resync done"),
    "reconnect": ("#6a3d9a", "-.", "reconnect"),
}

STATUSES = ("passed", "warning", "failed", "missing")
STATUS_COLORS = {"passed": "#4daf4a", "warning": "#ffb000", "failed": "#e41a1c", "missing": "#bdbdbd"}


def png_bytes(fig: Figure) -> bytes:
    """The figure as a 256-colour PNG: a third of the bytes of an RGBA one, no visible difference."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    out = BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    return out.getvalue()


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)


def _minutes(ts: pa.ChunkedArray | pa.Array, hour: datetime) -> np.ndarray:
    """timestamp[ms] → minutes since `hour`."""
    return (_floats(pc.cast(ts, pa.int64())) - hour.timestamp() * 1000) / 60_000


def with_breaks(x: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, ...]:
    """NaN inserted where consecutive points are more than 3 cadences (≥ 10 s) apart, so a line
    breaks where records are missing instead of bridging the hole."""
    if len(x) < 2:
        return (x, *ys)
    step = np.diff(x)
    cut = np.flatnonzero(step > max(3 * float(np.median(step)), 10 / 60)) + 1
    return tuple(np.insert(a, cut, np.nan) for a in (x, *ys))


def _event_minutes(books: pa.Table, events: Sequence[dict[str, Any]], hour: datetime) -> dict[str, np.ndarray]:
    """Marker kind → minutes of the hour: events by `type`, plus gap and checksum marker records."""
    found: dict[str, list[float]] = {kind: [] for kind in MARKERS}
    for ev in events:
        kind = ev.get("type")
        if kind in found:
            try:
                found[kind].append((parse_ts_ms(ev["ts_utc"]) - hour.timestamp() * 1000) / 60_000)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
    if books.num_rows:
        x = _minutes(books["timestamp_utc"], hour)
        gap = _floats(pc.fill_null(books["gap_detected"], False)).astype(bool)
        bad = _floats(pc.equal(pc.fill_null(books["checksum_ok"], True), False)).astype(bool)
        found["gap"].extend(x[gap])
        found["checksum_mismatch"].extend(x[bad])
    return {k: np.unique(np.array(v)) for k, v in found.items() if v}


def _mark(axes: Sequence[Any], marks: dict[str, np.ndarray]) -> list[Any]:
    handles = []
    for kind, xs in marks.items():
        color, style, label = MARKERS[kind]
        for ax in axes:
            for x in xs:
                ax.axvline(x, color=color, linestyle=style, linewidth=1.5, zorder=5)
        handles.append(Line2D([], [], color=color, linestyle=style, linewidth=1.5, label=f"{label} ×{len(xs)}"))
    return handles


def _heatmap(books: pa.Table, hour: datetime) -> tuple[np.ndarray, float] | None:
    """(mean resting size per snapshot, shape DISTANCE_BINS×2 × TIME_BINS; NaN: no exact snapshot in
    that time bin, the ±bps range) of the exact rows of `books`, vectorised over all levels."""
    exact = books.filter(pc.invert(flagged(books))) if books.num_rows else books
    mid = _floats(exact["mid_price"]) if exact.num_rows else np.array([])
    keep = np.isfinite(mid) & (mid > 0)
    if not keep.any():
        return None
    t = np.clip(_minutes(exact["timestamp_utc"], hour), 0, 60 - 1e-9)
    dist, tmin, size = [], [], []
    for side in ("bids", "asks"):
        levels = exact[side].combine_chunks()
        parent = _floats(pc.list_parent_indices(levels)).astype(np.int64)
        flat = pc.list_flatten(levels)
        price, sz = _floats(pc.struct_field(flat, "price")), _floats(pc.struct_field(flat, "size"))
        ok = keep[parent] & np.isfinite(price) & np.isfinite(sz)
        dist.append((price[ok] / mid[parent[ok]] - 1) * 1e4)
        tmin.append(t[parent[ok]])
        size.append(sz[ok])
    d, tm, w = np.concatenate(dist), np.concatenate(tmin), np.concatenate(size)
    reach = float(np.quantile(np.abs(d), 0.98)) if len(d) else 0.0
    span = next((r for r in BPS_RANGES if r >= reach), BPS_RANGES[-1])
    t_edges = np.linspace(0, 60, TIME_BINS + 1)
    d_edges = np.linspace(-span, span, 2 * DISTANCE_BINS + 1)
    total, _, _ = np.histogram2d(d, tm, bins=(d_edges, t_edges), weights=w)
    snapshots, _ = np.histogram(t[keep], bins=t_edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / snapshots[np.newaxis, :]
    mean[:, snapshots == 0] = np.nan
    return mean, float(span)


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks between low and high (1-9 when that gives fewer than 3)."""
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    for subs in ((1, 2, 5), range(1, 10)):
        ticks = [m * 10.0**e for e in decades for m in subs if low <= m * 10.0**e <= high]
        if len(ticks) >= 3:
            return ticks
    return ticks


def hour_axis(ax: Any, grid: bool = True) -> None:
    ax.set_xlim(0, 60)
    ax.set_xticks(range(0, 61, 5))
    if grid:
        ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)


def empty_hour(title: str, text: str) -> tuple[Figure, Any]:
    """A short figure of an hour with nothing to draw: its minutes axis and `text` across it."""
    fig = Figure(figsize=(HOUR_SIZE[0], 4.5), dpi=DPI)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.06, right=0.97, top=0.86, bottom=0.22)
    hour_axis(ax)
    ax.set_yticks([])
    ax.text(30, 0.5, text, ha="center", va="center", fontsize=20, color="#555555", transform=ax.get_xaxis_transform(),
            bbox={"facecolor": "white", "edgecolor": "none"}, zorder=10)
    ax.set_xlabel("minute of the hour (UTC)")
    fig.suptitle(title, fontsize=13)
    return fig, ax


def hour_figure(books: pa.Table, features: pa.Table, events: Sequence[dict[str, Any]], inst_id: str,
                hour: datetime) -> bytes:
    """PNG of one instrument-hour: `books` (curated schema, flagged records included), `features`
    (`features.book_features` of them) and the hour's `events` (CONTRACT §3 dicts)."""
    hour = utc(hour)
    exact = _floats(pc.fill_null(features["exact"], False)).astype(bool) if features.num_rows else np.array([], bool)
    marks = _event_minutes(books, events, hour)
    title = (f"{inst_id}  {hour:%Y-%m-%d %H}:00–{hour:%H}:59 UTC   ·   {books.num_rows} records, "
             f"{int(exact.sum())} exact")
    if not exact.any():
        fig, ax = empty_hour(title, "no exact book in this hour" if books.num_rows else "no record in this hour")
        handles = _mark([ax], marks)
        if handles:
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
        return png_bytes(fig)

    fig = Figure(figsize=HOUR_SIZE, dpi=DPI)
    x = _minutes(features["timestamp_utc"], hour)

    def series(name: str) -> np.ndarray:
        return np.where(exact, _floats(features[name]), np.nan)

    grid = fig.add_gridspec(3, 1, height_ratios=(1, 1, 1.5), hspace=0.12)
    fig.subplots_adjust(left=0.1, right=0.88, top=0.9, bottom=0.08)  # room for two-line labels and wide ticks
    ax_mid = fig.add_subplot(grid[0])
    ax_depth = fig.add_subplot(grid[1], sharex=ax_mid)
    ax_heat = fig.add_subplot(grid[2], sharex=ax_mid)

    xs, mid, spread = with_breaks(x, series("mid"), series("spread_bps"))
    ax_mid.plot(xs, mid, color="#222222", linewidth=0.9, label="mid")
    ax_mid.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax_mid.set_ylabel("mid price")
    ax_spread = ax_mid.twinx()
    ax_spread.plot(xs, spread, color="#2c7fb8", linewidth=0.7, alpha=0.7, label="spread")
    ax_spread.set_ylabel("spread (bps)", color="#2c7fb8")
    ax_spread.tick_params(axis="y", colors="#2c7fb8")
    finite = spread[np.isfinite(spread)]
    top = float(finite.max()) if finite.size else 0.0
    ax_spread.set_ylim(0, top * 1.25 if top > 0 else 1.0)  # a constant spread is drawn inside, not on the top edge
    ax_mid.legend(handles=[*ax_mid.get_lines(), *ax_spread.get_lines()], loc="upper left", fontsize=8, ncol=2)

    # bids drawn up, asks down: the two sides never hide each other; ≤100 bps filled, ≤25 bps a line
    xd, *depth = with_breaks(x, *(series(f"{side}_depth_{bps}bps") for side in ("bid", "ask") for bps in (25, 100)))
    for sign, color, (near, far), side in ((1, BID_COLOR, depth[:2], "bid"), (-1, ASK_COLOR, depth[2:], "ask")):
        ax_depth.fill_between(xd, 0, sign * far, where=np.isfinite(far), color=color, alpha=0.25, linewidth=0,
                              label=f"{side} ≤100 bps")
        ax_depth.plot(xd, sign * near, color=color, linewidth=0.7, label=f"{side} ≤25 bps")
    ax_depth.axhline(0, color="#888888", linewidth=0.6)
    ax_depth.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(v):g}"))
    ax_depth.set_ylabel("depth (size)\n← asks · bids →")
    ax_depth.legend(loc="upper left", fontsize=8, ncol=4)

    heat = _heatmap(books, hour)
    if heat is not None:
        mean, span = heat
        positive = mean[np.isfinite(mean) & (mean > 0)]
        norm = LogNorm(*np.quantile(positive, (0.02, 0.995))) if positive.size else None
        image = ax_heat.imshow(np.ma.masked_invalid(np.where(mean > 0, mean, np.nan)), origin="lower", aspect="auto",
                               extent=(0, 60, -span, span), cmap="viridis", norm=norm, interpolation="nearest")
        ax_heat.axhline(0, color="white", linewidth=0.5, alpha=0.6)
        bar = fig.colorbar(image, cax=ax_heat.inset_axes((1.015, 0, 0.015, 1)))
        bar.set_label("mean size per snapshot (log)", fontsize=8)
        if norm is not None:
            bar.set_ticks(_log_ticks(norm.vmin, norm.vmax), labels=None)
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        bar.ax.tick_params(labelsize=7)
    ax_heat.set_facecolor("#f0f0f0")
    ax_heat.set_ylabel("distance from mid (bps)\n← bids · asks →")
    ax_heat.set_xlabel("minute of the hour (UTC)")
    for ax in (ax_mid, ax_depth, ax_heat):
        hour_axis(ax, grid=ax is not ax_heat)
    fig.align_ylabels([ax_mid, ax_depth, ax_heat])
    for ax in (ax_mid, ax_depth):
        ax.tick_params(labelbottom=False)
    handles = _mark([ax_mid, ax_depth, ax_heat], marks)
    fig.suptitle(title, fontsize=13)
    if handles:
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=len(handles), fontsize=9,
                   frameon=False)
    return png_bytes(fig)


def start_of_hour(hour: TimeLike) -> datetime:
    """The start of the UTC hour holding `hour` (ISO-8601 text or a datetime); ReadError if it is not a time."""
    try:
        when = utc(hour) if isinstance(hour, datetime) else parse_utc(hour)
    except ValueError:
        raise ReadError(f"hour={hour!r} is not a time: use ISO-8601, e.g. 2026-11-20T13:00Z") from None
    return when.replace(minute=0, second=0, microsecond=0)


def render_hour(inst_id: str, hour: TimeLike, *, lake: str | os.PathLike | None = None) -> bytes:
    """`hour_figure` of the lake's hour holding `hour` (records with flagged ones, features, events).
    Raises `ReadError` for a lake or instrument that does not exist; an hour without records renders."""
    start = start_of_hour(hour)
    request = book_range(inst_id, start, start + layout.HOUR, lake=lake, include_flagged=True)
    books = request.hour_table(start)
    return hour_figure(books, book_features(books), request.source.hour_events(inst_id, start), inst_id, start)


def write_png(png: bytes, out: str | os.PathLike | None, default: str) -> Path:
    """`png` written to `out`, or to `default` in the working directory; the path written."""
    target = Path(out) if out is not None else Path(default)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png)
    return target


def plot_hour_file(inst_id: str, hour: TimeLike, *, lake: str | os.PathLike | None = None,
                   out: str | os.PathLike | None = None) -> Path:
    """`l2-collector plot`: `render_hour` written to `out` (default `{instId}_{YYYY-MM-DD}T{HH}.png` in
    the working directory); returns the path written."""
    return write_png(render_hour(inst_id, hour, lake=lake), out, f"{inst_id}_{start_of_hour(hour):%Y-%m-%dT%H}.png")


@dataclass(frozen=True)
class HourHealth:
    """One cell of the lake health figure."""

    inst_id: str
    hour: datetime
    status: str  # one of STATUSES
    coverage_pct: float | None = None
    gaps: int = 0
    failed_checks: tuple[str, ...] = ()


def health_status(verdicts: Sequence[Verdict]) -> str:
    """The worst outcome of an hour's verdicts (`quality.worst_status`: "failed" if an ERROR check
    failed, "warning" if only WARN checks did, else "passed"), or "missing" without verdicts."""
    return worst_status(tuple(v.check_name for v in verdicts if not v.passed)) if verdicts else "missing"


def hour_health(inst_id: str, hour: datetime, verdicts: Sequence[Verdict]) -> HourHealth:
    """A health cell from an hour's verdicts (`quality.hour_verdicts`)."""
    meta = {v.check_name: v.metadata for v in verdicts}
    coverage = meta.get(COVERAGE, {}).get("coverage_pct")
    return HourHealth(inst_id, hour, health_status(verdicts), coverage, int(meta.get(NO_GAPS, {}).get("gaps", 0)),
                      tuple(v.check_name for v in verdicts if not v.passed))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _hour_ticks(hours: Sequence[datetime]) -> tuple[list[int], list[str]]:
    """About 24 ticks at most, on hours that are multiples of the step; the date under the first tick
    of each day."""
    step = next((s for s in (1, 2, 3, 6, 12) if len(hours) / s <= 26), 24)
    ticks, labels, last_day = [], [], None
    for i, h in enumerate(hours):
        if h.hour % step == 0 or i == 0:
            ticks.append(i)
            labels.append(f"{h:%H}h" + (f"\n{h:%b %d}" if h.date() != last_day else ""))
            last_day = h.date()
    return ticks, labels


# what a cell says of each failed check: short enough for a cell, named in the figure's note
CELL_LABELS = {NO_GAPS: "gap", NO_CHECKSUM_FAILURES: "crc", COVERAGE: "cov", NO_CROSSED_BOOKS: "crossed",
               SCHEMA_VALID: "schema", TIMESTAMPS_VALID: "ts"}
CELL_NOTE = "cell: the checks that failed — N gap = N gap markers, crc = checksum failures, cov N% = coverage"


def _cell_text(cell: HourHealth, tall: bool) -> str:
    """The failed checks of a cell, one short label each (empty for a clean hour)."""
    parts = []
    for name in HOUR_CHECKS:
        if name not in cell.failed_checks:
            continue
        if name == NO_GAPS:
            parts.append(f"{cell.gaps} gap")
        elif name == COVERAGE and cell.coverage_pct is not None:
            parts.append(f"cov {cell.coverage_pct:.0f}%")
        else:
            parts.append(CELL_LABELS[name])
    return ("\n" if tall else " ").join(parts[:2] if tall else parts[:1])


def lake_health_figure(cells: Sequence[HourHealth], instruments: Sequence[str], hours: Sequence[datetime]) -> bytes:
    """PNG heatmap of `instruments` (rows) × `hours` (columns) coloured by status; a pair without a
    cell is "missing". Cells show coverage % and gaps when wide enough (≤ 48 hours), only failed
    cells' coverage when narrower, nothing when narrower still."""
    hours = [utc(h) for h in hours]
    row = {inst: i for i, inst in enumerate(instruments)}
    col = {h: j for j, h in enumerate(hours)}
    status = np.full((max(len(instruments), 1), max(len(hours), 1)), STATUSES.index("missing"))
    placed: dict[tuple[int, int], HourHealth] = {}
    for cell in cells:
        r, c = row.get(cell.inst_id), col.get(utc(cell.hour))
        if r is not None and c is not None:
            status[r, c] = STATUSES.index(cell.status)
            placed[r, c] = cell
    counts = {s: int((status[: len(instruments), : len(hours)] == i).sum()) for i, s in enumerate(STATUSES)}
    failing: dict[str, int] = {}
    for cell in placed.values():
        for name in cell.failed_checks:
            failing[name] = failing.get(name, 0) + 1

    n_rows, n_cols = status.shape
    header, footer = 1.05, 0.75  # inches: title, legend, failing checks (a line each); hour labels
    height = min(9.0, max(3.0, header + footer + 0.32 * n_rows))
    fig = Figure(figsize=(HEALTH_WIDTH, height), dpi=DPI)
    left = (0.35 + 0.075 * max((len(i) for i in instruments), default=4)) / HEALTH_WIDTH
    right, top, bottom = 0.985, 1 - header / height, footer / height
    fig.subplots_adjust(left=left, right=right, top=top, bottom=bottom)
    ax = fig.add_subplot()
    ax.imshow(status, cmap=ListedColormap([STATUS_COLORS[s] for s in STATUSES]), vmin=-0.5,
              vmax=len(STATUSES) - 0.5, aspect="auto", interpolation="nearest")
    cell_w = (right - left) * HEALTH_WIDTH * DPI / n_cols
    cell_h = (top - bottom) * height * DPI / n_rows
    if cell_w >= 4 and cell_h >= 4:  # white lines between cells
        ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.6 if cell_w >= 8 else 0.3)
        ax.tick_params(which="minor", length=0)
    labelled = cell_w >= 30 and cell_h >= 10
    for (r, c), cell in placed.items():
        if labelled and cell.failed_checks:
            ax.text(c, r, _cell_text(cell, cell_h >= 22), ha="center", va="center",
                    fontsize=7 if cell_w >= 40 else 6, linespacing=0.95,
                    color="white" if cell.status == "failed" else "black")
    ax.set_yticks(range(len(instruments)), list(instruments), fontsize=8 if cell_h >= 12 else 6)
    ax.set_xticks(*_hour_ticks(hours), fontsize=8)
    ax.tick_params(which="major", length=2)
    ax.set_xlabel("hour (UTC)" + (f"   ·   {CELL_NOTE}" if labelled else ""), fontsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)

    span = f"{hours[0]:%Y-%m-%d %H}:00 – {hours[-1]:%Y-%m-%d %H}:59 UTC" if hours else "no hours"
    size = f"{_count(len(instruments), 'instrument')} × {_count(len(hours), 'hour')}"
    fig.text(left, 1 - 0.1 / height, f"Lake health  {span}   ·   {size}", fontsize=12, va="top")
    fig.legend(handles=[Patch(color=STATUS_COLORS[s], label=f"{s} {counts[s]}") for s in STATUSES],
               loc="upper left", bbox_to_anchor=(left - 0.006, 1 - 0.36 / height), ncol=4, fontsize=9, frameon=False,
               handlelength=1.2, columnspacing=1.5, borderaxespad=0)
    worst = ", ".join(f"{name} ×{n}" for name, n in sorted(failing.items(), key=lambda kv: -kv[1]))
    fig.text(left, 1 - 0.62 / height, f"failing checks: {worst or 'none'}", fontsize=9, va="top", ha="left",
             color="#444444")
    return png_bytes(fig)
