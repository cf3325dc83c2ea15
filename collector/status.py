"""The periodic status lines that `l2-collector run` prints on stderr.

One line per instrument, e.g. `BTC-USDT-SWAP synced 10.0 msg/s seqId=123 lag=15ms last_msg_age=0.1s
gaps=0 checksum_failures=0 resyncs=0 records=1800 write_lag_p50=1003ms p99=1950ms` — `lag` is receive
minus event time of the last message, `write_lag` event time to record on disk over the interval
(bounded by the cadence). An instrument that is not in sync says for how long (`unsynced=12.5s`); one
OKX rejected at runtime (60018) shows as `delisted`. Then one line for the process: the event loop's
largest lateness since the previous line (`loop_lag_max`) and the lines waiting for the writer thread;
with `--lake-url` also the shipping backlog (`ship backlog 2 hours (5 files, 12.3 MB) oldest
2026-11-20T10:00Z, failing (3): …`, fields `ship_pending_hours`, `ship_pending_bytes`, …).
Rates are computed from the engine's counters between two calls; nothing here touches the hot path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from collector.loop_monitor import LoopMonitor
from collector.ship import Shipper
from collector.writer import BackgroundWriter
from l2_lake.book.engine import InstrumentSync
from l2_lake.logs import log_event

log = logging.getLogger("collector.status")


@dataclass
class StatusReporter:
    """Remembers the previous counters so each line shows rates over the last interval."""

    syncs: dict[str, InstrumentSync]
    writer: BackgroundWriter
    loop: LoopMonitor
    shipper: Shipper | None = None  # with --lake-url: its backlog joins the process line
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)
    _started_s: float = field(default_factory=time.monotonic)

    def report(self, now_s: float, now_ms: int) -> None:
        store = self.writer.store
        for inst_id, sync in self.syncs.items():
            prev_t, prev_msgs = self._last.get(inst_id, (self._started_s, 0))
            elapsed = now_s - prev_t
            rate = (sync.messages - prev_msgs) / elapsed if elapsed > 0 else 0.0
            self._last[inst_id] = (now_s, sync.messages)
            lag = f"{sync.recv_ms - sync.ts_ms}ms" if sync.ts_ms else "-"
            age = f"{(now_ms - sync.recv_ms) / 1000:.1f}s" if sync.recv_ms else "-"
            state = "delisted" if sync.delisted else sync.state.value
            unsynced_s = None if sync.unsynced_since is None else round(now_s - sync.unsynced_since, 1)
            unsynced = "" if unsynced_s is None else f" unsynced={unsynced_s}s"
            records = store.records_written[inst_id]
            write_lag = _percentiles(store.write_lags_ms.pop(inst_id, []))
            log_event(
                log, logging.INFO, "status", inst_id,
                f"{inst_id} {state}{unsynced} {rate:.1f} msg/s seqId={sync.seq_id} "
                f"lag={lag} last_msg_age={age} "
                f"gaps={sync.gaps} checksum_failures={sync.checksum_failures} resyncs={sync.resyncs} "
                f"records={records} write_lag_p50={write_lag[0]}ms p99={write_lag[1]}ms",
                state=state, unsynced_s=unsynced_s, msgs_per_s=round(rate, 2), seqId=sync.seq_id,
                gaps=sync.gaps, resyncs=sync.resyncs, records=records, write_lag_p50_ms=write_lag[0],
                write_lag_p99_ms=write_lag[1],
            )
        lag_ms = round(self.loop.take_max_lag_s() * 1000)
        ship: dict[str, object] = {}
        ship_text = ""
        if self.shipper is not None:
            backlog = self.shipper.backlog
            ship, ship_text = backlog.fields(), f", {backlog.summary()}"
        log_event(log, logging.INFO, "status_process", None,
                  f"event loop lag max {lag_ms}ms, {self.writer.backlog} lines queued for the writer{ship_text}",
                  loop_lag_max_ms=lag_ms, writer_backlog=self.writer.backlog, **ship)


def _percentiles(values: list[int]) -> tuple[int | str, int | str]:
    """(p50, p99) of the lags since the last line, '-' when nothing was written."""
    if not values:
        return "-", "-"
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, (len(ordered) * 99) // 100)]
