"""CPU per instrument-hour of each step the pipeline runs on an hour, against a floor measured in the
same run and against the collector's capture of that hour.

    python -m bench.hour_cost [--depth 400] [--records-per-hour 1800] [--capture 20]

One closed hour is written (`bench.synthetic_hours.write_hour`: `depth` levels a side, one record every 2 s).
Each step runs on it through the library code the assets call, its CPU (every thread) the least of
`--repeat` runs:
- floor: `orjson.loads` of every line plus the fastest gzip of the hour (igzip at level 0); what
  any pipeline that reads the hour and compresses it pays;
- register: the one read (`l2_lake.tiers.hour_tiers.build_hour_tiers`: Arrow parse, statistics,
  the six checks' figures) and the six verdicts;
- curated + features: the same call with both tiers, minus register (they come from that read);
- hour figure: the same again with the figure drawn, minus the above;
- archive: the verified gzip (`archive_hour`), which runs hours later, so reads the hour again.
With `--capture N`, `bench.process` runs the collector over N simulated instruments (400 levels)
for `--capture-seconds` and its steady CPU gives the capture's CPU per instrument-hour.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from isal import igzip

from bench.synthetic_hours import instrument_records, write_hour
from bench.timing import cpu_best
from l2_lake.format import layout
from l2_lake.pictures.plots import hour_figure
from l2_lake.quality.verdicts import hour_verdicts
from l2_lake.store.tree import LocalTree
from l2_lake.tiers.archive import archive_hour
from l2_lake.tiers.hour_tiers import CURATE, FEATURES, build_hour_tiers

INST = "BTC-USDT-SWAP"
HOUR = datetime(2026, 11, 20, 5, tzinfo=UTC)
NOW = HOUR + timedelta(hours=8)
GRACE = timedelta(minutes=2)


@dataclass(frozen=True)
class StepCosts:
    """CPU seconds per instrument-hour."""

    hour_bytes: int
    floor: float
    register: float
    curate_features: float
    figure: float
    archive: float

    @property
    def all_steps(self) -> float:
        """Every step a registered, curated and archived hour goes through, the figure left out."""
        return self.register + self.curate_features + self.archive


def _floor(data: bytes, repeat: int) -> float:
    def parse() -> None:
        for line in data.splitlines():
            orjson.loads(line)

    def compress() -> bytes:
        return igzip.compress(data, compresslevel=0)

    return cpu_best(parse, repeat)[1] + cpu_best(compress, repeat)[1]


def step_costs(root: Path, depth: int, per_hour: int, repeat: int = 3) -> StepCosts:
    """The costs of one hour of `depth` levels and `per_hour` records written under `root`."""
    write_hour(root, INST, HOUR, instrument_records(INST, depth), per_hour)
    source = layout.records_path(root, INST, HOUR)
    data = source.read_bytes()
    tree = LocalTree(root)

    def tiers(asked: frozenset[str], figure: bool = False) -> float:
        def run() -> None:
            built = build_hour_tiers(tree, INST, HOUR, NOW, GRACE, cadence_seconds=2.0, tiers=asked,
                                     figure=hour_figure if figure else None)
            hour_verdicts(built.read.stats, built.read.error, 95.0)
        return cpu_best(run, repeat)[1]

    def archive() -> None:
        kept = root / "kept.jsonl"
        shutil.copy2(source, kept)
        archive_hour(root, INST, HOUR, NOW, GRACE)
        layout.archive_path(root, INST, HOUR).unlink()
        kept.rename(source)

    register = tiers(frozenset())
    with_tiers = tiers(frozenset({CURATE, FEATURES}))
    with_figure = tiers(frozenset({CURATE, FEATURES}), figure=True)
    return StepCosts(len(data), _floor(data, repeat), register, with_tiers - register, with_figure - with_tiers,
                     cpu_best(archive, repeat)[1])


def capture_cpu_per_instrument_hour(instruments: int, seconds: float) -> float:
    """The collector's steady CPU seconds per instrument-hour over `instruments` simulated ones (`bench.process`)."""
    from bench import process

    args = process.arguments(["--sizes", str(instruments), "--duration", str(seconds),
                              "--warmup", str(min(15.0, seconds / 3))])
    workdir = Path(tempfile.mkdtemp(prefix="bench-hour-cost-"))
    try:
        result = process.run_size(instruments, args, workdir, have_time=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result.window.cpu_pct["collector"] / 100 * 3600 / instruments


def report(costs: StepCosts, capture: float | None) -> list[str]:
    """Table rows: each step's CPU per instrument-hour and its ratio to the floor (and to capture)."""
    def row(label: str, seconds: float) -> str:
        vs_capture = f" | {seconds / capture:.2f}×" if capture else ""
        return f"| {label} | {seconds:.3f} s | {seconds / costs.floor:.2f}×{vs_capture} |"

    head = "| step | CPU per instrument-hour | vs floor" + (" | vs capture |" if capture else " |")
    rows = [head, "|---|---:|---:|" + ("---:|" if capture else ""),
            row("floor: orjson parse + igzip level 0", costs.floor),
            row("register (one read, figures, 6 checks)", costs.register),
            row("curated Parquet + features (same read)", costs.curate_features),
            row("hour figure (optional)", costs.figure),
            row("archive (verified igzip, hours later)", costs.archive),
            row("**all steps, figure off**", costs.all_steps),
            row("all steps, figure on", costs.all_steps + costs.figure)]
    if capture:
        rows.append(row("capture (collector, `bench.process`)", capture))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hour_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=400)
    parser.add_argument("--records-per-hour", type=int, default=1800)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--capture", type=int, default=0, metavar="N",
                        help="also measure the collector over N simulated instruments (0: not)")
    parser.add_argument("--capture-seconds", type=float, default=45.0)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-hour-cost-"))
    try:
        costs = step_costs(root, args.depth, args.records_per_hour, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    capture = capture_cpu_per_instrument_hour(args.capture, args.capture_seconds) if args.capture else None
    print(f"one hour: depth {args.depth}, {args.records_per_hour} records, {costs.hour_bytes / 1e6:.1f} MB; "
          f"CPU best of {args.repeat}")
    print("\n".join(report(costs, capture)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
