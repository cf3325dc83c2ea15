"""The tape hour's picture (`l2_lake.pictures.tape_figure`) drawn from made-up messages whose shape is
known, checked in its pixels: where the book was not trusted (red), where no message came (grey),
which minute is boxed as the busiest at the top, and the short figure of an hour with nothing to
draw. Real tapes: test_tape_assets.py (`book_tape`'s metadata, `l2-collector plot --tape`)."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgb

from l2_lake.pictures.plots import DPI, HOUR_SIZE
from l2_lake.pictures.tape_figure import SILENCE_COLOR, UNTRUSTED_COLOR, tape_hour_figure
from l2_lake.quality.tape_stats import TopOfBook
from l2_lake_tests.test_plots import assert_image, decoded
from l2_pipeline_tests.lake_factory import BTC, hour_at, ms

HOUR = hour_at(0)
LEFT, RIGHT = 0.08, 0.97  # tape_hour_figure's subplots_adjust


def made_up_hour(untrusted=(20, 21), silent=(30, 32), busy=45, trusted=True) -> TopOfBook:
    """A message every 100 ms; the book not trusted in minutes `untrusted`, no message in `silent`;
    the best ask moves at every message of minute `busy` and every 10 s elsewhere."""
    top = TopOfBook()
    for i in range(36_000):
        minute = i / 600
        if silent[0] <= minute < silent[1]:
            continue
        ok = trusted and not untrusted[0] <= minute < untrusted[1]
        moves = i if int(minute) == busy else i // 100
        top.ts_ms.append(ms(HOUR) + i * 100)
        top.trusted.append(ok)
        top.bid.append(97000.0 if ok else np.nan)
        top.ask.append(97000.1 + (moves % 7) / 10 if ok else np.nan)
    return top


def column(rgb: np.ndarray, minute: float) -> np.ndarray:
    """The pixels (3 columns wide) at `minute` of the hour's axes."""
    x = round(rgb.shape[1] * (LEFT + (RIGHT - LEFT) * minute / 60))
    return rgb[:, x - 1:x + 2]


def shaded(rgb: np.ndarray, color: str, alpha: float) -> int:
    """Pixels of `color` laid over white at `alpha`."""
    blended = 1 - alpha * (1 - np.array(to_rgb(color)))
    return int((np.abs(rgb - blended) <= 10 / 255).all(axis=-1).sum())


def test_untrusted_and_silent_stretches_are_shaded_where_they_are():
    png = tape_hour_figure(made_up_hour(), BTC, HOUR)
    width, height = (int(inches * DPI) for inches in HOUR_SIZE)
    assert_image(png, (width, width), (height, height), kb=(20, 250))
    rgb = decoded(png)
    red, grey = (UNTRUSTED_COLOR, 0.35), (SILENCE_COLOR, 0.25)
    assert shaded(column(rgb, 20.5), *red) > 300  # the hour panel and the rate panel
    assert shaded(column(rgb, 31), *grey) > 300
    for minute in (42, 52, 57):  # a few pixels at most, the red ask line's edges (not on the 5 min grid)
        assert shaded(column(rgb, minute), *red) < 40 and shaded(column(rgb, minute), *grey) < 40


def test_the_busiest_minute_at_the_top_is_boxed():
    rgb = decoded(tape_hour_figure(made_up_hour(busy=45), BTC, HOUR))
    top_panel = slice(int(0.1 * rgb.shape[0]), int(0.35 * rgb.shape[0]))
    edge = np.array(to_rgb("#222222"))

    def box_pixels(minute: float) -> int:
        return int((np.abs(column(rgb, minute)[top_panel] - edge) <= 25 / 255).all(axis=-1).sum())

    assert box_pixels(45) > 100 and box_pixels(46) > 100  # the minute's two edges, down the panel
    assert box_pixels(40) < 20 and box_pixels(50) < 20


def test_an_hour_without_a_trusted_book_draws_the_short_figure():
    for top in (made_up_hour(trusted=False), TopOfBook()):
        png = tape_hour_figure(top, BTC, HOUR)
        assert_image(png, (1100, 1250), (300, 600), kb=(5, 150))
        decoded(png)
