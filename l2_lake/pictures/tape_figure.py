"""The picture of one hour of the full-resolution tape: what it holds that the 2 s snapshots do not.

Drawn from `tape_stats.TopOfBook` (the replay that gives `book_tape` its figures), on exchange time,
1200×900 px as PNG (`plots.png_bytes`), three panels sharing nothing but the instrument:

1. the hour: the best bid and ask after every message the engine trusted. Shaded: red where the
   engine did not trust its book (after a gap or a failed checksum, until it resynced), grey where
   no message came for 10 s or more; the minute of panel 2 boxed.
2. that minute, the one with the most changes of the best bid or ask: every message's best bid and
   ask as steps, and a dot where a snapshot every 2 s samples them (what the snapshots see of it).
3. messages and changes of the best bid or ask per second, in 10 s bins.

`book_tape` shows it in each partition's metadata (`figure`, when the lake's `hour_figures` is on);
`l2-collector plot --tape` writes it to a file (`plot_tape_hour_file`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from l2_lake.book.tape_replay import TapeReplayer
from l2_lake.format.hours import utc
from l2_lake.pictures.plots import (
    ASK_COLOR,
    BID_COLOR,
    DPI,
    HOUR_SIZE,
    empty_hour,
    hour_axis,
    png_bytes,
    start_of_hour,
    with_breaks,
    write_png,
)
from l2_lake.quality.tape_stats import CountingSink, TopOfBook
from l2_lake.research.read import ReadError, TimeLike, lake_source

SNAPSHOT_CADENCE_S = 2  # the collector's default cadence: what the snapshots sample
SILENCE_MS = 10_000  # no message for this long is shaded
BIN_S = 10  # panel 3's bins
UNTRUSTED_LEAST = 0.15  # minutes: the narrowest untrusted stretch drawn on an hour's axis
UNTRUSTED_COLOR, SILENCE_COLOR, MESSAGE_COLOR, CHANGE_COLOR = "#e41a1c", "#969696", "#333333", "#6a3d9a"


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True in `flags`."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _shade(ax, x: np.ndarray, trusted: np.ndarray, silences: list[tuple[float, float]]) -> None:
    """Red from each untrusted message to the next message (UNTRUSTED_LEAST wide at least: a resync
    takes a second or less, which an hour's axis would not show), grey over each silence (minutes)."""
    for first, last in _runs(~trusted):
        end = x[min(last + 1, len(x) - 1)]
        ax.axvspan(x[first], max(end, x[first] + UNTRUSTED_LEAST), color=UNTRUSTED_COLOR, alpha=0.35, linewidth=0)
    for start, end in silences:
        ax.axvspan(start, end, color=SILENCE_COLOR, alpha=0.25, linewidth=0)


def _silences(ts_ms: np.ndarray, hour_ms: int) -> list[tuple[float, float]]:
    """Stretches of the hour without a message for SILENCE_MS or more, in minutes (the hour's edges too)."""
    bounds = np.concatenate([[hour_ms], ts_ms, [hour_ms + 3_600_000]])
    gaps = np.flatnonzero(np.diff(bounds) >= SILENCE_MS)
    return [((bounds[i] - hour_ms) / 60_000, (bounds[i + 1] - hour_ms) / 60_000) for i in gaps]


def _changes(trusted: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Trusted messages after which the best bid or ask differs from the message before."""
    before_bid, before_ask = np.concatenate([[np.nan], bid[:-1]]), np.concatenate([[np.nan], ask[:-1]])
    with np.errstate(invalid="ignore"):
        return trusted & ((bid != before_bid) | (ask != before_ask))


def _price_axis(ax) -> None:
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_ylabel("price")


def _legend() -> list[Any]:
    """One legend for the three panels, under the title: no panel's data is hidden behind it."""
    return [Line2D([], [], color=ASK_COLOR, label="best ask"), Line2D([], [], color=BID_COLOR, label="best bid"),
            Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="#444444",
                   label=f"a snapshot every {SNAPSHOT_CADENCE_S} s"),
            Patch(color=UNTRUSTED_COLOR, alpha=0.35, label="book not trusted (gap → resync)"),
            Patch(color=SILENCE_COLOR, alpha=0.25, label="no message ≥ 10 s"),
            Line2D([], [], color=MESSAGE_COLOR, label="messages / s"),
            Line2D([], [], color=CHANGE_COLOR, label="best-price changes / s")]


def tape_hour_figure(top: TopOfBook, inst_id: str, hour: datetime) -> bytes:
    """PNG of one tape hour from the best bid and ask after each of its messages (`TopOfBook`)."""
    hour = utc(hour)
    hour_ms = int(hour.timestamp() * 1000)
    ts = np.asarray(top.ts_ms, dtype=np.int64)
    trusted = np.asarray(top.trusted, dtype=bool)
    bid, ask = np.asarray(top.bid, dtype=float), np.asarray(top.ask, dtype=float)
    changes = _changes(trusted, bid, ask)
    share = f"{100 * trusted.mean():.1f} %" if len(ts) else "–"
    title = (f"{inst_id}  {hour:%Y-%m-%d %H}:00–{hour:%H}:59 UTC   ·   tape: {len(ts):,} messages, {share} on a "
             f"trusted book, {int(changes.sum()):,} best-price changes")
    if not trusted.any():
        fig, ax = empty_hour(title, "no trusted book in this hour" if len(ts) else "no message in this hour")
        _shade(ax, (ts - hour_ms) / 60_000, trusted, _silences(ts, hour_ms))
        return png_bytes(fig)

    x = (ts - hour_ms) / 60_000
    fig = Figure(figsize=HOUR_SIZE, dpi=DPI)
    grid = fig.add_gridspec(3, 1, height_ratios=(1.1, 1.3, 0.8), hspace=0.42)
    fig.subplots_adjust(left=0.08, right=0.97, top=0.89, bottom=0.07)
    ax_hour, ax_minute, ax_rate = (fig.add_subplot(grid[i]) for i in range(3))
    silences = _silences(ts, hour_ms)

    xs, bids, asks = with_breaks(x, bid, ask)
    ax_hour.plot(xs, asks, color=ASK_COLOR, linewidth=0.6)
    ax_hour.plot(xs, bids, color=BID_COLOR, linewidth=0.6)
    _shade(ax_hour, x, trusted, silences)
    minute = int(np.argmax(np.bincount(np.clip(x[changes], 0, 59.999).astype(int), minlength=60)))
    ax_hour.axvspan(minute, minute + 1, fill=False, edgecolor="#222222", linewidth=1.0, zorder=6)
    hour_axis(ax_hour)
    _price_axis(ax_hour)
    ax_hour.set_title("the hour: best bid and ask after every message", fontsize=10, loc="left")

    _minute_panel(ax_minute, ts, bid, ask, changes, hour_ms, minute, hour)

    edges = np.arange(0, 60 + BIN_S / 60, BIN_S / 60)
    per_second = [np.histogram(x[mask], bins=edges)[0] / BIN_S for mask in (np.ones_like(trusted), changes)]
    ax_rate.stairs(per_second[0], edges, color=MESSAGE_COLOR, linewidth=0.8)
    ax_rate.stairs(per_second[1], edges, color=CHANGE_COLOR, linewidth=0.8)
    _shade(ax_rate, x, trusted, silences)
    hour_axis(ax_rate)
    ax_rate.set_ylim(0, max(per_second[0].max(), 1) * 1.25)
    ax_rate.set_ylabel(f"per second\n({BIN_S} s bins)")
    ax_rate.set_xlabel("minute of the hour (UTC)")
    fig.suptitle(title, fontsize=12, y=0.985)
    fig.legend(handles=_legend(), loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=7, fontsize=8.5,
               frameon=False, handlelength=1.6, columnspacing=1.2)
    return png_bytes(fig)


def _minute_panel(ax, ts: np.ndarray, bid: np.ndarray, ask: np.ndarray, changes: np.ndarray, hour_ms: int,
                  minute: int, hour: datetime) -> None:
    """Panel 2: every message of `minute` as steps (from the state the minute began with), and the
    2 s samples of the snapshots as dots; seconds of the minute on the x axis."""
    start_ms = hour_ms + minute * 60_000
    inside = (ts >= start_ms) & (ts < start_ms + 60_000)
    before = int(np.searchsorted(ts, start_ms, side="left")) - 1  # the message whose state the minute begins with
    shown = np.flatnonzero(inside)
    if before >= 0:
        shown = np.concatenate([[before], shown])
    seconds = np.clip((ts[shown] - start_ms) / 1000, 0, None)
    seconds = np.append(seconds, 60.0)  # the last state holds to the minute's end
    for prices, color in ((ask, ASK_COLOR), (bid, BID_COLOR)):
        values = np.append(prices[shown], prices[shown[-1]] if len(shown) else np.nan)
        ax.step(seconds, values, where="post", color=color, linewidth=0.9)
    samples_ms = start_ms + np.arange(0, 60, SNAPSHOT_CADENCE_S) * 1000
    at = np.searchsorted(ts, samples_ms, side="right") - 1
    valid = at >= 0
    sampled_bid = np.where(valid, bid[np.maximum(at, 0)], np.nan)
    sampled_ask = np.where(valid, ask[np.maximum(at, 0)], np.nan)
    sample_s = (samples_ms - start_ms) / 1000
    for prices, color in ((sampled_ask, ASK_COLOR), (sampled_bid, BID_COLOR)):
        ax.plot(sample_s, prices, linestyle="none", marker="o", markersize=4.5, markerfacecolor="white",
                markeredgecolor=color, markeredgewidth=1.2, zorder=5)
    with np.errstate(invalid="ignore"):
        seen = int(np.sum((sampled_bid[1:] != sampled_bid[:-1]) | (sampled_ask[1:] != sampled_ask[:-1])))
    messages, moved = int(inside.sum()), int((changes & inside).sum())
    hour_axis(ax)  # a minute's 60 seconds on the same ticks as an hour's 60 minutes
    _price_axis(ax)
    ax.set_xlabel(f"second of minute {hour:%H}:{minute:02d} (UTC)")
    ax.set_title(f"minute {hour:%H}:{minute:02d} (boxed above), the busiest at the top: {messages} messages, "
                 f"{moved} best-price changes; a snapshot every {SNAPSHOT_CADENCE_S} s shows {seen}",
                 fontsize=10, loc="left")


def top_of_book(lines: Iterable[bytes], inst_id: str) -> TopOfBook:
    """The best bid and ask after each message of a tape hour's lines (a replay of its own)."""
    top = TopOfBook()
    replayer = TapeReplayer(inst_id, 1, CountingSink(), on_message=top.add)
    for line in lines:
        replayer.feed(line)
    return top


def render_tape_hour(inst_id: str, hour: TimeLike, *, lake: str | os.PathLike | None = None) -> bytes:
    """`tape_hour_figure` of the lake's tape hour holding `hour`; ReadError when the lake has none."""
    start = start_of_hour(hour)
    source = lake_source(lake)
    lines = source.hour_tape_lines(inst_id, start)
    if lines is None:
        raise ReadError(f"{source} has no tape of {inst_id} for {start:%Y-%m-%d %H}:00 UTC (the collector writes "
                        "one with --tape)")
    return tape_hour_figure(top_of_book(lines, inst_id), inst_id, start)


def plot_tape_hour_file(inst_id: str, hour: TimeLike, *, lake: str | os.PathLike | None = None,
                        out: str | os.PathLike | None = None) -> Path:
    """`l2-collector plot --tape`: `render_tape_hour` written to `out` (default
    `{instId}_{YYYY-MM-DD}T{HH}_tape.png` here); returns the path written."""
    return write_png(render_tape_hour(inst_id, hour, lake=lake), out,
                     f"{inst_id}_{start_of_hour(hour):%Y-%m-%dT%H}_tape.png")
