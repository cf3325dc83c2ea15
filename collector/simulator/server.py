"""The simulator server: OKX public WebSocket and REST on one loopback port, and `l2-collector simulate`.

One shared tick loop advances every instrument's true book each `interval_ms`, whether or not
anyone listens, so all connections see the same sequence and a late subscriber gets a snapshot
of the current book. HTTP requests that are not the WebSocket path are answered from the
`process_request` hook: the OKX REST endpoints, and `/sim/inject` for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from collector.simulator.faults import (
    BOOK_FAULTS,
    CONNECTION_FAULTS,
    FAULT_HELP,
    FAULT_NAMES,
    INSTRUMENTS_FAULTS,
    REST_FAULTS,
    VALUED_FAULTS,
    FaultPlan,
    parse_faults,
    parse_ms,
)
from collector.simulator.instruments import instrument_spec
from collector.simulator.market import CHECKSUM_MODES, MarketBook, dump_frames
from collector.simulator.rest import RestApi, json_response
from collector.simulator.session import Session, SessionContext, encode
from collector.simulator.truth import TruthLog
from l2_lake.format.layout import validate_inst_id
from l2_lake.format.record import parse_ts_ms

WS_PATH = "/ws/v5/public"
INJECT_PATH = "/sim/inject"
DEFAULT_INSTRUMENTS = ("BTC-USDT-SWAP", "ETH-USDT-SWAP")
EXIT_CONFIG = 2


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator is told; `port` 0 picks a free port."""

    host: str = "127.0.0.1"
    port: int = 0
    instruments: tuple[str, ...] = DEFAULT_INSTRUMENTS
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 1  # the market's random walk; same seed, same book stream
    interval_ms: int = 100  # between incremental updates, like OKX `books`
    checksum_mode: str = "real"  # one of CHECKSUM_MODES
    rest_lag_ticks: int = 0  # REST snapshots lag the WebSocket by this many updates
    notice_grace: float = 60.0  # seconds from a maintenance notice (event 64008) to the disconnect
    silence_seconds: float = 40.0  # how long the `silence` fault keeps a connection quiet
    truth_log: Path | None = None  # JSONL of every true book state and every fault
    start_at_ms: int | None = None  # exchange clock starts here (e.g. just before an hour boundary)

    def __post_init__(self) -> None:
        if not self.instruments:
            raise ValueError("at least one instrument is needed")
        for inst_id in self.instruments:
            validate_inst_id(inst_id)
        if len(set(self.instruments)) != len(self.instruments):
            raise ValueError(f"instruments listed twice: {','.join(self.instruments)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port} must be between 0 and 65535")
        if self.interval_ms < 1:
            raise ValueError(f"--interval-ms {self.interval_ms} must be at least 1")
        if self.checksum_mode not in CHECKSUM_MODES:
            raise ValueError(f"--checksum {self.checksum_mode!r} must be one of {', '.join(CHECKSUM_MODES)}")
        if self.rest_lag_ticks < 0:
            raise ValueError(f"--rest-lag-ticks {self.rest_lag_ticks} must be >= 0")
        if self.notice_grace < 0 or self.silence_seconds < 0:
            raise ValueError("--notice-grace and --silence-seconds must be >= 0")


class Simulator:
    """A running simulator; use `running_simulator(config)` to start and stop one."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        offset_ms = 0 if config.start_at_ms is None else config.start_at_ms - wall_clock_ms()
        self.clock_ms = lambda: wall_clock_ms() + offset_ms
        self.books = {
            inst_id: MarketBook(instrument_spec(inst_id), config.seed, self.clock_ms, config.checksum_mode)
            for inst_id in config.instruments
        }
        self.truth = TruthLog(config.truth_log)
        self.rest = RestApi(self.books, config.faults, config.seed, self.truth, self.clock_ms, config.rest_lag_ticks)
        self.sessions: set[Session] = set()
        self._context = SessionContext(self.books, config.faults, config.seed, self.truth,
                                       config.notice_grace, config.silence_seconds, [])
        self._fault_rngs = {i: random.Random(f"{config.seed}:book-faults:{i}") for i in self.books}
        self._pending: list[tuple[str, str | None]] = []
        self._connections = 0
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = config.port

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{WS_PATH}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        for book in self.books.values():
            self.truth.state(book)
        self.truth.flush()
        self._server = await serve(
            self._serve_connection,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
            close_timeout=2,
            max_size=1 << 16,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.truth.close()

    def inject(self, fault: str, inst_id: str | None = None, ms: int | None = None) -> None:
        """Inject `fault` once: book and connection faults at the next tick (connection faults on
        every connection subscribed to `inst_id`, or on all), `no_snapshot` at the next subscribe,
        REST faults at the next books request, instruments faults at the next instruments request
        (whatever `inst_id`). `ms` is only for rest_ts_skew: the exact skew (default 500)."""
        if fault not in FAULT_NAMES:
            raise ValueError(f"unknown fault {fault!r}; valid names: {', '.join(FAULT_NAMES)}")
        if inst_id is not None and inst_id not in self.books:
            raise ValueError(f"instrument {inst_id!r} is not simulated")
        if ms is not None and fault not in VALUED_FAULTS:
            raise ValueError(f"ms applies only to {', '.join(VALUED_FAULTS)}, not to {fault!r}")
        if ms is not None and ms < 0:
            raise ValueError(f"ms={ms} must be >= 0")
        if fault in REST_FAULTS:
            self.rest.inject(fault, inst_id, ms)
        elif fault in INSTRUMENTS_FAULTS:
            self.rest.inject(fault, None)
        elif fault == "no_snapshot":
            self._context.pending_no_snapshot.append(inst_id)
        else:
            self._pending.append((fault, inst_id))

    # ---- the tick loop

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval_ms / 1000
        deadline = loop.time()
        while True:
            deadline = max(deadline + interval, loop.time() - 10 * interval)
            await asyncio.sleep(deadline - loop.time())
            self.tick()

    def tick(self) -> None:
        """Advance every book one step, stream it, then apply this tick's connection faults."""
        injected, self._pending = self._pending, []
        for inst_id, book in self.books.items():
            wanted = {f for f, i in injected if f in BOOK_FAULTS and i in (None, inst_id)}
            self._tick_book(book, wanted)
        self.rest.record_tick()
        now_ms = self.clock_ms()
        for session in list(self.sessions):
            wanted = {f for f, i in injected if f in CONNECTION_FAULTS and (i is None or i in session.subscriptions)}
            session.on_tick(wanted, now_ms)
        self.truth.flush()

    def _tick_book(self, book: MarketBook, injected: set[str]) -> None:
        rng = self._fault_rngs[book.inst_id]
        fired = {name for name in BOOK_FAULTS if self.config.faults.fires(name, rng)} | injected
        message = book.heartbeat_update() if "heartbeat" in fired else book.next_update(reset="reset" in fired)
        self.truth.state(book)
        for name in sorted(fired):
            self.truth.fault(name, book.inst_id, book.ts_ms)
        data = message["data"][0]
        if "zero_checksum" in fired:
            data["checksum"] = 0
        if "bad_checksum" in fired:
            data["checksum"] = (book.true_checksum() ^ 0x5A5A) or 1
        if "ts_micro" in fired:
            data["ts"] = str(book.ts_ms * 1000)
        if "drop" in fired:
            return
        frame = encode(message)
        for session in self.sessions:
            if book.inst_id in session.subscriptions:
                session.push(frame)

    # ---- connections and HTTP

    async def _serve_connection(self, ws: ServerConnection) -> None:
        self._connections += 1
        session = Session(self._context, ws, self._connections)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == WS_PATH:
            return None
        params = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if url.path == INJECT_PATH:
            try:
                ms = params.get("ms")
                self.inject(params.get("fault", ""), params.get("instId"), None if ms is None else parse_ms(ms))
            except ValueError as exc:
                return json_response(HTTPStatus.BAD_REQUEST, {"ok": False, "error": str(exc)})
            return json_response(HTTPStatus.OK, {"ok": True})
        return await self.rest.handle(url.path, params)


@contextlib.asynccontextmanager
async def running_simulator(config: SimConfig) -> AsyncIterator[Simulator]:
    """`async with running_simulator(cfg) as sim:` → a listening simulator (`sim.ws_url`,
    `sim.rest_url`, `sim.inject(fault, inst_id)`), stopped on exit."""
    sim = Simulator(config)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


# ---- command line


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `l2-collector simulate`."""
    fault_lines = "; ".join(f"{name}: {text}" for name, text in FAULT_HELP.items())
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port for WS and REST; 0 picks a free one "
                        "(default 8765)")
    parser.add_argument("--instruments", default=",".join(DEFAULT_INSTRUMENTS),
                        help=f"comma-separated instIds (default {','.join(DEFAULT_INSTRUMENTS)})")
    parser.add_argument("--faults", default="", help="comma-separated name=probability (per 100 ms tick) or "
                        f"bare name (always); rest_ts_skew=MS takes milliseconds. Names: {fault_lines}")
    parser.add_argument("--seed", type=int, default=1, help="seed of books and fault draws (default 1)")
    parser.add_argument("--interval-ms", type=int, default=100, help="update interval (default 100)")
    parser.add_argument("--checksum", choices=CHECKSUM_MODES, default="real",
                        help="real: OKX CRC32 of the top 25; zero: always 0 like production OKX (default real)")
    parser.add_argument("--rest-lag-ticks", type=int, default=0,
                        help="REST books serves the book of this many ticks ago (default 0)")
    parser.add_argument("--notice-grace", type=float, default=60.0,
                        help="seconds between a 64008 notice and the close (default 60)")
    parser.add_argument("--silence-seconds", type=float, default=40.0,
                        help="how long a silenced connection sends nothing (default 40)")
    parser.add_argument("--start-at", type=_iso_ms, metavar="ISO-8601",
                        help="exchange clock starts at this UTC time (e.g. 2026-11-25T10:59:55Z) to test hour rollover")
    parser.add_argument("--truth-log", type=Path, help="JSONL of every true book state and every fault")
    parser.add_argument("--dump-frames", type=Path, metavar="FILE",
                        help="write --frames raw frames (synthetic clock) to FILE and exit; no server")
    parser.add_argument("--frames", type=int, default=10_000, help="frames for --dump-frames (default 10000)")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The parsed flags as a `SimConfig`; ValueError with a clear message for bad values."""
    return SimConfig(
        host=args.host,
        port=args.port,
        instruments=tuple(i.strip() for i in args.instruments.split(",") if i.strip()),
        faults=parse_faults(args.faults),
        seed=args.seed,
        interval_ms=args.interval_ms,
        checksum_mode=args.checksum,
        rest_lag_ticks=args.rest_lag_ticks,
        notice_grace=args.notice_grace,
        silence_seconds=args.silence_seconds,
        truth_log=args.truth_log,
        start_at_ms=args.start_at,
    )


def _iso_ms(text: str) -> int:
    try:
        return parse_ts_ms(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 UTC time like 2026-11-25T10:59:55Z") from None


async def _serve_until_signal(config: SimConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim: Simulator | None = None
    try:
        sim = Simulator(config)
        await sim.start()
    except OSError as exc:
        if sim is not None:
            await sim.stop()
        print(f"l2-collector: error: cannot start the simulator on {config.host}:{config.port}: {exc}",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        print(f"SIMULATOR LISTENING {sim.ws_url} {sim.rest_url}", flush=True)
        await stop.wait()
    finally:
        await sim.stop()
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """`l2-collector simulate`: serve until SIGINT/SIGTERM (exit 0), or dump frames and exit."""
    try:
        config = config_from_args(args)
        if args.frames < 1:
            raise ValueError(f"--frames {args.frames} must be at least 1")
    except ValueError as exc:
        print(f"l2-collector: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.dump_frames is not None:
        written = dump_frames(args.dump_frames, config.instruments, args.frames, config.seed, config.checksum_mode)
        print(f"wrote {written} frames for {','.join(config.instruments)} to {args.dump_frames}", flush=True)
        return 0
    return asyncio.run(_serve_until_signal(config))
