"""Benchmark 2: our hot path next to cryptofeed's OKX `books` handler (checksum validation on), same run.

cryptofeed is never a dependency of this project: it lives in a venv of its own (default
`bench/.cf-venv`, created by `--setup` from `bench/requirements-cryptofeed.txt`, git-ignored by a
`.gitignore` inside it). Run from the project venv, this script re-executes itself with that venv's
interpreter and `PYTHONPATH` pointing at the repository, so both engines run in one process on the
same interpreter and the same frames (text, as the WebSocket client hands them over).

Per frame, measured as best of `--repeat` interleaved passes:
- floor: `orjson.loads`;
- ours: `l2_lake.venues.okx.protocol.decode` → `InstrumentSync.on_book` (`bench.hot_path.EngineDriver`);
- cryptofeed: `OKX.message_handler(raw, conn, ts)` — its own parse (yapic json, floats as Decimal),
  `_book` (Decimal levels into the C `order_book` structure, CRC32 of the top 25 every message),
  `book_callback` and a do-nothing async callback. The feed is constructed offline: the instrument
  list it would fetch over REST is put into `cryptofeed.symbols.Symbols` first, and no connection
  is ever opened.
A third row feeds a checksum-0 stream with cryptofeed's validation off, the only way it runs against
OKX today. A second table shows where cryptofeed's time goes: its parse alone, and its C
`order_book` fed directly (orjson parse, Decimal levels, checksum) without asyncio.

Then, untimed, the integrity behaviour that differs: cryptofeed never reads `seqId`/`prevSeqId`, so a
lost update is only noticed if and when the top-25 checksum disagrees; and with OKX's checksum 0
(production since 2026-06-23) its validation raises BadChecksum on the first snapshot.

Usage: `python -m bench.cryptofeed_compare --setup` once, then
`python -m bench.cryptofeed_compare [--frames 100000] [--repeat 3] [--gap-trials 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import importlib.util
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bench.hot_path import REFERENCE, EngineDriver, NullSink, parse_floor
from bench.process import code_version
from collector.simulator.market import dump_frames
from l2_lake.book.engine import InstrumentSync
from l2_lake.venues.okx.protocol import decode

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / "bench" / ".cf-venv"
REQUIREMENTS = REPO / "bench" / "requirements-cryptofeed.txt"
CHILD_MARKER = "OKX_L2_CF_BENCH_CHILD"
SIM_INSTRUMENTS = ("BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP")
RECEIPT_TS = 1.0  # cryptofeed only passes the receipt timestamp through to callbacks

Pass = Callable[[list[str]], Any]


# ---- the separate venv -------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def create_venv(venv: Path) -> None:
    """Create `venv` with this interpreter's base Python and install cryptofeed (+ the same orjson)."""
    print(f"creating {venv} (cryptofeed for this benchmark only)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")
    pins = [f"orjson=={importlib.metadata.version('orjson')}"]
    subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS), *pins], check=True)


def reexec_in_venv(venv: Path, setup: bool, argv: list[str]) -> None:
    """Replace this process with the same command under the cryptofeed venv's interpreter."""
    python = venv_python(venv)
    if not python.exists():
        if not setup:
            sys.exit(f"cryptofeed is not importable here and {venv} does not exist; "
                     "run `python -m bench.cryptofeed_compare --setup` once (creates it from PyPI)")
        create_venv(venv)
    env = dict(os.environ)
    env[CHILD_MARKER] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    os.execve(str(python), [str(python), "-m", "bench.cryptofeed_compare", *argv], env)


# ---- driving cryptofeed offline ----------------------------------------------------------------


def okx_instrument(inst_id: str) -> dict[str, str]:
    """The fields of an OKX `/public/instruments` entry that cryptofeed's symbol parser reads."""
    parts = inst_id.split("-")
    if parts[-1] == "SWAP":
        inst_type = "SWAP"
    elif len(parts) == 3:
        inst_type = "FUTURES"
    else:
        inst_type = "SPOT"
    return {"instType": inst_type, "instId": inst_id, "baseCcy": parts[0], "quoteCcy": parts[1], "tickSz": "0.1"}


def register_okx_symbols(inst_ids: Iterable[str]) -> None:
    """Give cryptofeed the symbol table it would otherwise download when the feed is constructed."""
    from cryptofeed.exchanges import OKX
    from cryptofeed.symbols import Symbols

    response = {"code": "0", "data": [okx_instrument(i) for i in sorted(set(inst_ids))]}
    symbols, info = OKX._parse_symbol_data([response])
    Symbols.set(OKX.id, symbols, info)


def okx_feed(checksum_validation: bool = True) -> Any:
    """A cryptofeed OKX feed that is never started: we call its message handler ourselves."""
    from cryptofeed.defines import L2_BOOK
    from cryptofeed.exchanges import OKX

    async def ignore(book: Any, receipt_timestamp: float) -> None:
        return None

    return OKX(checksum_validation=checksum_validation, callbacks={L2_BOOK: ignore})


def cryptofeed_pass(loop: asyncio.AbstractEventLoop, checksum_validation: bool = True) -> tuple[Pass, Any]:
    """A pass over frames through `OKX.message_handler`, as cryptofeed's connection handler calls it."""
    feed = okx_feed(checksum_validation)
    handler = feed.message_handler

    async def drive(frames: list[str]) -> int:
        for raw in frames:
            await handler(raw, None, RECEIPT_TS)  # conn is not used for public book messages
        return len(frames)

    def run(frames: list[str]) -> int:
        return loop.run_until_complete(drive(frames))

    return run, feed


def cryptofeed_parse_pass() -> Pass:
    """cryptofeed's parse alone: yapic json with floats as Decimal (the first line of its handler)."""
    from yapic import json as yapic_json

    def run(frames: list[str]) -> None:
        loads = yapic_json.loads
        for raw in frames:
            loads(raw, parse_float=Decimal)

    return run


def order_book_pass() -> Pass:
    """cryptofeed's C `order_book` structure fed directly: orjson, Decimal levels, OKX checksum."""
    from order_book import OrderBook

    books: dict[str, Any] = {}

    def run(frames: list[str]) -> int:
        loads = orjson.loads
        mismatches = 0
        for raw in frames:
            obj = loads(raw)
            inst_id = obj["arg"]["instId"]
            snapshot = obj["action"] == "snapshot"
            for item in obj["data"]:
                if snapshot:
                    book = books[inst_id] = OrderBook(checksum_format="OKX")
                else:
                    book = books[inst_id]
                for side, levels in ((book.bids, item["bids"]), (book.asks, item["asks"])):
                    for level in levels:
                        price, size = Decimal(level[0]), Decimal(level[1])
                        if size:
                            side[price] = size
                        elif price in side:
                            del side[price]
                expected = item.get("checksum") or 0
                if expected and book.checksum() != expected & 0xFFFFFFFF:
                    mismatches += 1
        return mismatches

    return run


# ---- measurement -------------------------------------------------------------------------------


def interleaved_best(passes: dict[str, Pass], frames: list[str], repeat: int) -> dict[str, float]:
    """Best-of-`repeat` seconds per pass, the passes taking turns so drift hits them all alike."""
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(repeat):
        for name, fn in passes.items():
            gc.collect()  # nobody pays for the garbage another pass left behind
            start = time.perf_counter()
            fn(frames)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def our_final_books(frames: list[str]) -> dict[str, InstrumentSync]:
    """Our engine over `frames` (untimed), to compare its final books with cryptofeed's."""
    driver = EngineDriver()
    driver(frames)
    return driver.syncs


def books_agree(syncs: dict[str, InstrumentSync], feed: Any) -> bool:
    """Same levels (as numbers) on both sides of every instrument, ours vs cryptofeed's."""
    for inst_id, sync in syncs.items():
        theirs = feed._l2_book[feed.exchange_symbol_to_std_symbol(inst_id)].book
        for ours_side, their_side in ((sync.book.bids, theirs.bids), (sync.book.asks, theirs.asks)):
            ours = [(Decimal(lv[0]), Decimal(lv[1])) for lv in ours_side.top(10_000)]
            if ours != list(their_side.to_list()):
                return False
    return True


@dataclass
class Row:
    name: str
    frames: int
    in_sync: int
    agree: bool
    us: dict[str, float]

    def ratio(self, a: str, b: str) -> float:
        return self.us[a] / self.us[b]


def measure(name: str, frames: list[str], repeat: int, loop: asyncio.AbstractEventLoop,
            checksum_validation: bool = True) -> Row:
    engine = EngineDriver()
    theirs, feed = cryptofeed_pass(loop, checksum_validation)
    passes: dict[str, Pass] = {
        "floor": parse_floor,
        "ours": engine,
        "cryptofeed": theirs,
        "cf_parse": cryptofeed_parse_pass(),
        "cf_order_book": order_book_pass(),
    }
    in_sync = engine(frames)  # warm-up; counts messages applied in sync
    theirs(frames)  # warm-up; raises BadChecksum if its validation disagreed anywhere
    mismatches = passes["cf_order_book"](frames)
    if mismatches:
        raise AssertionError(f"{name}: order_book checksum disagreed on {mismatches} messages")
    agree = books_agree(our_final_books(frames), feed)
    best = interleaved_best(passes, frames, repeat)
    n = len(frames)
    return Row(name, n, in_sync, agree, {k: v / n * 1e6 for k, v in best.items()})


# ---- integrity behaviour (untimed) -------------------------------------------------------------


@dataclass
class GapTrial:
    ours_flagged_next: bool
    cf_detected_after: int | None  # updates of the gapped instrument until BadChecksum, None = never
    cf_book_wrong_at_end: bool


def instrument_of(raw: str) -> str:
    return orjson.loads(raw)["arg"]["instId"]


def checksum_blind_updates(frames: list[str]) -> tuple[dict[str, list[int]], int]:
    """Indices of updates that change only levels below the top 25 (a checksum cannot see them),
    per instrument, and the number of updates looked at (both books had ≥ 25 levels a side)."""
    sink = NullSink()
    syncs: dict[str, InstrumentSync] = {}
    blind: dict[str, list[int]] = {}
    total = 0
    for index, raw in enumerate(frames):
        for msg in decode(raw):
            sync = syncs.get(msg.inst_id)
            if sync is None:
                sync = syncs[msg.inst_id] = InstrumentSync(msg.inst_id, 400, sink)
                sync.subscribed()
            bids, asks = sync.book.bids.top(25), sync.book.asks.top(25)
            if not msg.is_snapshot and sync.in_sync and len(bids) == len(asks) == 25:
                total += 1
                lowest_bid, highest_ask = Decimal(bids[-1][0]), Decimal(asks[-1][0])
                if (all(Decimal(lv[0]) < lowest_bid for lv in msg.bids)
                        and all(Decimal(lv[0]) > highest_ask for lv in msg.asks)):
                    blind.setdefault(msg.inst_id, []).append(index)
            sync.on_book(msg, msg.ts_ms)
    return blind, total


def _cf_replay(frames: list[str]) -> tuple[Any, int | None]:
    """Replay through a fresh cryptofeed feed; returns (feed, index of the frame that raised BadChecksum)."""
    from cryptofeed.exceptions import BadChecksum

    feed = okx_feed()

    async def drive() -> int | None:
        for index, raw in enumerate(frames):
            try:
                await feed.message_handler(raw, None, RECEIPT_TS)
            except BadChecksum:
                return index
        return None

    return feed, asyncio.run(drive())


def gap_trial(frames: list[str], dropped: int, window: int) -> GapTrial:
    """Drop frame `dropped` (one update), then feed `window` more updates of its instrument to both."""
    inst_id = instrument_of(frames[dropped])
    following = [i for i in range(dropped + 1, len(frames)) if instrument_of(frames[i]) == inst_id][:window]
    end = following[-1]
    gapped = frames[:dropped] + frames[dropped + 1:end + 1]
    syncs = our_final_books(frames[:dropped] + frames[dropped + 1:following[0] + 1])
    ours_flagged = syncs[inst_id].gaps == 1 and not syncs[inst_id].in_sync
    feed, failed_at = _cf_replay(gapped)
    if failed_at is not None:
        after = sum(1 for raw in gapped[dropped:failed_at + 1] if instrument_of(raw) == inst_id)
        return GapTrial(ours_flagged, after, False)
    truth, _ = _cf_replay(frames[:end + 1])
    pair = feed.exchange_symbol_to_std_symbol(inst_id)
    wrong = feed._l2_book[pair].book.to_dict() != truth._l2_book[pair].book.to_dict()
    return GapTrial(ours_flagged, None, wrong)


def gap_trials(frames: list[str], candidates: list[int], n_trials: int, window: int, seed: int) -> list[GapTrial]:
    usable = [i for i in candidates if i < len(frames) - 4 * window]
    picked = sorted(random.Random(seed).sample(usable, min(n_trials, len(usable))))
    return [gap_trial(frames, i, window) for i in picked]


def zero_checksum_behaviour(frames: list[str]) -> str:
    """What cryptofeed (validation on) does with OKX's checksum 0, and what ours does."""
    from cryptofeed.exceptions import BadChecksum

    feed = okx_feed()
    try:
        asyncio.run(feed.message_handler(frames[0], None, RECEIPT_TS))
        theirs = "accepted the first snapshot"
    except BadChecksum:
        theirs = "raised BadChecksum on the very first snapshot (its check compares the CRC with 0)"
    syncs = our_final_books(frames)
    ours = sum(s.in_sync for s in syncs.values())
    return (f"cryptofeed with checksum_validation=True {theirs}; ours: {ours}/{len(syncs)} instruments in sync "
            f"after {len(frames)} frames (checksum 0 = not validated, seqId chain still checked)")


# ---- output ------------------------------------------------------------------------------------


def summarise_trials(label: str, trials: list[GapTrial], window: int) -> None:
    n = len(trials)
    if not n:
        print(f"- {label}: no candidate updates")
        return
    ours_ok = sum(t.ours_flagged_next for t in trials)
    next_msg = sum(t.cf_detected_after == 1 for t in trials)
    later = sorted(t.cf_detected_after for t in trials if t.cf_detected_after not in (None, 1))
    never_wrong = sum(t.cf_detected_after is None and t.cf_book_wrong_at_end for t in trials)
    never_right = sum(t.cf_detected_after is None and not t.cf_book_wrong_at_end for t in trials)
    print(f"- {label}, {n} trials: ours flagged the gap on the next message in {ours_ok}/{n}. cryptofeed: "
          f"BadChecksum on the next message {next_msg}/{n}, later {len(later)}/{n}"
          f"{f' (after {later} updates)' if later else ''}, "
          f"not within {window} updates with its book still wrong {never_wrong}/{n}, "
          f"not detected but book right again {never_right}/{n}")


def print_results(rows: list[Row], integrity: list[tuple[str, list[GapTrial]]], blind_note: str, window: int,
                  zero_note: str) -> None:
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("cryptofeed", "order_book", "yapic.json",
                                                                          "orjson"))
    print(f"\ncode {code_version()}; Python {platform.python_version()}; {versions}; one process, frames as str")
    print("\n| input | frames | orjson.loads µs | ours µs | cryptofeed µs | ours/floor | ours/cryptofeed | "
          "final books agree |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.name} | {r.frames} | {r.us['floor']:.2f} | {r.us['ours']:.2f} | {r.us['cryptofeed']:.2f} | "
              f"{r.ratio('ours', 'floor'):.2f}x | {r.ratio('ours', 'cryptofeed'):.2f}x "
              f"(cryptofeed {r.ratio('cryptofeed', 'ours'):.1f}x slower) | {'yes' if r.agree else 'NO'} |")
    print("\n*OKX sends checksum 0 since 2026-06-23; cryptofeed's validation rejects that (below), so this row runs it "
          "with validation off: it then checks nothing, ours still checks the seqId chain.")
    print("\nWhere cryptofeed's time goes (µs/frame, same run):")
    print("\n| input | its parse alone (yapic, Decimal floats) | its C order_book fed directly "
          "(orjson + Decimal + checksum, no asyncio) | full handler |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r.name} | {r.us['cf_parse']:.2f} | {r.us['cf_order_book']:.2f} | {r.us['cryptofeed']:.2f} |")
    print("\nIntegrity (untimed). cryptofeed never reads seqId/prevSeqId; ours applies an update only if its "
          "prevSeqId is the last seqId.")
    print(f"- {blind_note}")
    for label, trials in integrity:
        summarise_trials(label, trials, window)
    print(f"- checksum 0 (OKX production since 2026-06-23): {zero_note}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="simulated frames (default 100000)")
    parser.add_argument("--reference-copies", type=int, default=200,
                        help="times the 290-frame OKX recording is repeated (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved passes, best kept (default 3)")
    parser.add_argument("--gap-trials", type=int, default=20, help="lost-update trials (0 = skip; default 20)")
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("CF_VENV", DEFAULT_VENV)),
                        help=f"venv holding cryptofeed (default {DEFAULT_VENV.relative_to(REPO)}, env CF_VENV)")
    parser.add_argument("--setup", action="store_true", help="create the venv from PyPI if it is missing")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("cryptofeed") is None:
        if os.environ.get(CHILD_MARKER):
            sys.exit(f"cryptofeed is still not importable under {sys.executable}; delete {args.venv} and "
                     "rerun with --setup")
        reexec_in_venv(args.venv, args.setup, [a for a in argv if a != "--setup"])

    reference = REFERENCE.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        real, zero = Path(tmp) / "real.jsonl", Path(tmp) / "zero.jsonl"
        dump_frames(real, SIM_INSTRUMENTS, args.frames, seed=1, checksum_mode="real")
        dump_frames(zero, SIM_INSTRUMENTS, args.frames, seed=1, checksum_mode="zero")
        simulated, zero_frames = real.read_text().splitlines(), zero.read_text().splitlines()
    register_okx_symbols([orjson.loads(f)["arg"]["instId"] for f in reference] + list(SIM_INSTRUMENTS))

    loop = asyncio.new_event_loop()
    try:
        rows = [
            measure(f"OKX recording (290 frames x {args.reference_copies})", reference * args.reference_copies,
                    args.repeat, loop),
            measure(f"simulated 400-level, real checksums ({args.frames})", simulated, args.repeat, loop),
            measure(f"simulated, checksum 0 ({args.frames}); cryptofeed validation OFF*", zero_frames,
                    args.repeat, loop, checksum_validation=False),
        ]
    finally:
        loop.close()
    window = 200
    integrity: list[tuple[str, list[GapTrial]]] = []
    blind_ref, total_ref = checksum_blind_updates(reference)
    blind_sim, total_sim = checksum_blind_updates(simulated)
    n_ref, n_sim = sum(map(len, blind_ref.values())), sum(map(len, blind_sim.values()))
    blind_note = (f"updates that change only levels below the top 25 (invisible to any checksum): "
                  f"{n_ref}/{total_ref} ({n_ref / max(1, total_ref):.0%}) in the OKX recording, "
                  f"{n_sim}/{total_sim} ({n_sim / max(1, total_sim):.0%}) in the simulated stream")
    if args.gap_trials:
        sample = simulated[:9_000]
        every = [i for i, raw in enumerate(sample) if orjson.loads(raw)["action"] == "update"]
        blind = sorted(i for indices in blind_sim.values() for i in indices if i < len(sample))
        integrity.append(("one random update dropped", gap_trials(sample, every, args.gap_trials, window, 7)))
        integrity.append(("one checksum-blind update dropped",
                          gap_trials(sample, blind, args.gap_trials, window, 8)))
    print_results(rows, integrity, blind_note, window, zero_checksum_behaviour(zero_frames[:3_000]))

if __name__ == "__main__":
    main()
