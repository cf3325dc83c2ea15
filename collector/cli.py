"""Command line of `l2-collector`: `run`, `simulate`, `history`, `replay`, `export` and `plot` (names
are a scripted contract).

Exit codes: 0 success (also after SIGINT/SIGTERM), 2 bad argument, bad configuration or unknown
instrument (one clear line on stderr), 1 unexpected failure.

`export` and `plot` read the lake through `l2_pipeline`'s Dagster-free modules (read, export,
plots, tape_figure), imported only when those commands run: `run` never loads them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import NoReturn

from collector.app import EXIT_CONFIG, EXIT_DATA, check_data_dir, run_collector
from collector.config import CollectorConfig, ConfigError, load_config
from l2_lake import logs

_DEFAULTS = CollectorConfig()


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    p.add_argument("--config", type=Path, help="TOML file (keys as below, optionally under [collector])")
    p.add_argument("--data-dir", help=f"lake root (env L2_DATA_DIR, default {d.data_dir})")
    p.add_argument("--instruments", help=f"comma-separated instIds (default {','.join(d.instruments)})")
    p.add_argument("--cadence", help=f"seconds between snapshot records (default {d.cadence:g})")
    p.add_argument("--depth", help=f"levels per side in each record, 1..400 (default {d.depth})")
    p.add_argument("--ws-url", help=f"OKX public WebSocket URL (default {d.ws_url})")
    p.add_argument("--rest-url", help=f"OKX REST base URL (default {d.rest_url})")
    p.add_argument("--channels-per-connection", help=f"instruments per WS connection, ≤30 "
                   f"(default {d.channels_per_connection})")
    p.add_argument("--ping-after", help=f"idle seconds before sending ping, <30 (default {d.ping_after:g})")
    p.add_argument("--pong-timeout", help=f"seconds to wait for pong before the feed is stale "
                   f"(default {d.pong_timeout:g})")
    p.add_argument("--resync-timeout", help=f"seconds an instrument may stay out of sync (waiting for the ack, "
                   f"the first message or alignment) before it is resubscribed (default {d.resync_timeout:g})")
    p.add_argument("--status-interval", help=f"seconds between status lines (default {d.status_interval:g})")
    p.add_argument("--metadata-refresh-hours", help=f"instrument metadata refresh period "
                   f"(default {d.metadata_refresh_hours:g})")
    p.add_argument("--backoff-initial", help=f"first reconnect delay cap, s (default {d.backoff_initial:g})")
    p.add_argument("--backoff-max", help=f"largest reconnect delay, s (default {d.backoff_max:g})")
    p.add_argument("--rest-timeout", help=f"REST request timeout, s (default {d.rest_timeout:g})")
    p.add_argument("--log-level", help=f"DEBUG, INFO, WARNING or ERROR (default {d.log_level})")
    p.add_argument("--collector-id", help="this collector's name among replicas capturing the same instruments into "
                   "their own data dirs, e.g. host-a: a-z, 0-9, '-', up to 32 (env L2_COLLECTOR_ID; default none)")
    p.add_argument("--lake-url", help="s3://bucket[/prefix]: ship closed hours there from --data-dir, which then "
                   "only spools (env L2_LAKE_URL; credentials, region and endpoint from the standard AWS_* variables; "
                   "default none: the data dir is the lake)")
    p.add_argument("--tape", action="store_const", const="true",
                   help="also write every books message as received to raw/okx/l2_tape/{instId}/{DATE}/{HH}.jsonl, "
                   "replayable to any cadence by `l2-collector replay --tape` (env L2_TAPE=true; default off)")


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (what was wrong, where to look), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_lake_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instrument", required=True, help="instId, e.g. BTC-USDT-SWAP")
    # a str, not a Path: Path("s3://b/p") would collapse the URL's "//"
    p.add_argument("--lake", help="lake root or s3://bucket/prefix (env L2_LAKE_URL, else L2_DATA_DIR, else ./data)")


def build_parser() -> argparse.ArgumentParser:
    from collector.simulator.server import add_simulate_arguments

    parser = _OneLineParser(prog="l2-collector", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    _add_run_arguments(sub.add_parser("run", help="collect OKX books into the lake"))
    add_simulate_arguments(sub.add_parser("simulate", help="local OKX-protocol server with faults"))
    history = sub.add_parser("history", help="closed hours of the simulator's books, with planted faults, into a "
                             "lake in seconds (the demo's history)")
    history.add_argument("--data-dir", type=Path, required=True, help="lake root to write")
    history.add_argument("--instruments", default=",".join(_DEFAULTS.instruments),
                         help=f"comma-separated instIds (default {','.join(_DEFAULTS.instruments)})")
    history.add_argument("--hours", type=int, default=6, help="closed hours ending where this hour began (default 6)")
    history.add_argument("--seed", type=int, default=7, help="seed of the books (default 7)")
    replay = sub.add_parser("replay", help="recorded frames, or the tape, through the engine into a lake")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="JSONL file, one raw WS frame per line")
    source.add_argument("--tape", type=Path, nargs="+", help="tape hour files or directories "
                        "(raw/okx/l2_tape/{instId}/…/{HH}.jsonl written by `run --tape`, or its archive {HH}.parquet)")
    replay.add_argument("--data-dir", type=Path, required=True, help="lake root to write")
    replay.add_argument("--cadence", type=float, help="seconds of event time between records (default 2; with "
                        "--tape, default: the live cadence, each record exactly as the live run wrote it)")
    replay.add_argument("--depth", type=int, default=_DEFAULTS.depth, help="levels per side (default 400)")
    export = sub.add_parser("export", help="one instrument's books over a time range into a file")
    _add_lake_arguments(export)
    export.add_argument("--start", required=True, help="ISO-8601 UTC, inclusive, e.g. 2026-11-20T00:00Z")
    export.add_argument("--end", required=True, help="ISO-8601 UTC, exclusive")
    export.add_argument("--depth", type=int, help="levels per side (default: all the lake has)")
    export.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet",
                        help="parquet (curated schema), csv or jsonl (levels as JSON text); default parquet")
    export.add_argument("--out", type=Path, required=True, help="file to write (replaced when complete)")
    export.add_argument("--include-flagged", action="store_true",
                        help="also gap markers and checksum_ok=false records (left out by default)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    plot = sub.add_parser("plot", help="one instrument-hour as a PNG (mid, spread, depth, liquidity, events)")
    _add_lake_arguments(plot)
    plot.add_argument("--hour", required=True, help="ISO-8601 UTC hour, e.g. 2026-11-20T13:00Z")
    plot.add_argument("--out", type=Path, help="PNG to write (default {instId}_{YYYY-MM-DD}T{HH}.png here, "
                      "{…}_tape.png with --tape)")
    plot.add_argument("--tape", action="store_true",
                      help="the hour of the tape instead: best bid and ask after every message, its busiest minute "
                           "against 2 s snapshots, messages per second")
    return parser


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    print(f"l2-collector: error: {logs.redact(message)}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    cfg = load_config(flags, args.config)
    logs.configure(cfg.log_level)
    return asyncio.run(run_collector(cfg))


def _replay(args: argparse.Namespace) -> int:
    from l2_lake.book.replay import replay_file

    logs.configure()
    if args.cadence is not None and not args.cadence > 0:
        return _fail(f"--cadence {args.cadence} must be > 0")
    if not 1 <= args.depth <= 400:
        return _fail(f"--depth {args.depth} must be between 1 and 400")
    if args.tape:
        return _replay_tape(args)
    if not args.input.is_file():
        return _fail(f"--input {args.input} is not a file")
    check_data_dir(args.data_dir)
    stats = replay_file(args.input, args.data_dir, args.cadence or _DEFAULTS.cadence, args.depth)
    print(f"replayed {stats.frames} frames ({stats.book_messages} book messages, {stats.bad_frames} bad) "
          f"-> {stats.records} records in {args.data_dir}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from collector.simulator.history import write_history
    from l2_lake.format import layout

    logs.configure()
    if not 1 <= args.hours <= 48:
        return _fail(f"--hours {args.hours} must be between 1 and 48")
    inst_ids = [i.strip() for i in args.instruments.split(",") if i.strip()]
    unknown = [i for i in inst_ids if not layout.INST_ID_RE.fullmatch(i)]
    if not inst_ids or unknown:
        return _fail(f"--instruments {args.instruments!r}: give instIds such as BTC-USDT-SWAP")
    check_data_dir(args.data_dir)
    end = layout.hour_floor(time.time_ns() // 1_000_000)
    stats, plants = write_history(args.data_dir, inst_ids, end, args.hours, args.seed)
    first = end - timedelta(hours=args.hours)
    print(f"wrote {stats.records} records in {args.hours} closed hour(s), {first:%Y-%m-%dT%H}:00Z to "
          f"{end:%Y-%m-%dT%H}:00Z, of {', '.join(inst_ids)} into {args.data_dir}; "
          f"planted: {'; '.join(p.describe() for p in plants) or 'nothing'}")
    return 0


def _replay_tape(args: argparse.Namespace) -> int:
    from l2_lake.book.tape_replay import replay_tape

    missing = [str(p) for p in args.tape if not p.exists()]
    if missing:
        return _fail(f"--tape {', '.join(missing)}: no such file or directory")
    check_data_dir(args.data_dir)
    try:
        by_instrument = replay_tape(args.tape, args.data_dir, cadence_s=args.cadence, depth=args.depth)
    except ValueError as exc:
        return _fail(str(exc))
    if not by_instrument:
        return _fail(f"no tape hour files under {', '.join(map(str, args.tape))}")
    cadence = "the live cadence" if args.cadence is None else f"{args.cadence:g} s"
    for inst_id, stats in by_instrument.items():
        print(f"{inst_id}: replayed {stats.hours} hour(s), {stats.messages} messages ({stats.bad_lines} bad lines) "
              f"-> {stats.records} records at {cadence} in {args.data_dir}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from l2_lake.research.export import export_books
    from l2_lake.research.read import ReadError, book_range

    if args.out.is_dir() or not args.out.parent.is_dir():
        return _fail(f"--out {args.out}: give a file path in an existing directory")
    try:
        request = book_range(args.instrument, args.start, args.end, depth=args.depth, lake=args.lake,
                             include_flagged=args.include_flagged)
        result = export_books(request, args.out, args.format, quiet=args.quiet)
    except ReadError as exc:
        return _fail(str(exc))
    print(f"exported {result.rows} records of {args.instrument} ({result.hours} hours) to {result.path}: "
          f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from l2_lake.research.read import ReadError

    if args.tape:
        from l2_lake.pictures.tape_figure import plot_tape_hour_file as plot_file
    else:
        from l2_lake.pictures.plots import plot_hour_file as plot_file
    try:
        path = plot_file(args.instrument, args.hour, lake=args.lake, out=args.out)
    except ReadError as exc:
        return _fail(str(exc))
    print(f"wrote {path}")
    return 0


OFFLINE_COMMANDS = {"history": _history, "replay": _replay, "export": _export, "plot": _plot}


def _offline(args: argparse.Namespace) -> int:
    """An offline command over files or a bucket: a damaged archive, an unreadable file or a store that
    does not answer ends it with one line naming what failed (exit 1), not a traceback."""
    from l2_lake.store.home import StoreError

    try:
        return OFFLINE_COMMANDS[args.command](args)
    except (OSError, ValueError, StoreError) as exc:
        return _fail(f"{args.command}: {exc}", EXIT_DATA)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command in OFFLINE_COMMANDS:
            return _offline(args)
        from collector.simulator.server import run_simulate

        return run_simulate(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
