"""Instrument metadata: fetch OKX SWAP instruments over REST and keep them in the lake (DESIGN.md §2).

`meta/okx/instruments/{instId}.json` holds the latest object plus `fetched_at`; the `.history.jsonl`
beside it gets a line whenever any field other than `fetched_at` changed, so tick size or contract
value changes can be applied to old data.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from collector import layout, rest
from collector.record import format_ts_ms

INSTRUMENTS_PATH = "/api/v5/public/instruments"


class UnknownInstruments(ValueError):
    """Configured instIds that OKX does not list as SWAP instruments."""

    def __init__(self, inst_ids: list[str]) -> None:
        super().__init__(
            f"unknown instrument(s) {', '.join(inst_ids)}: OKX lists no SWAP instrument with that instId; "
            "check the spelling (e.g. BTC-USDT-SWAP) or remove it from --instruments"
        )
        self.inst_ids = inst_ids


def parse_instruments(body: bytes) -> dict[str, dict[str, Any]]:
    """instId → instrument object from a `/public/instruments` response body."""
    obj = orjson.loads(body)
    if not isinstance(obj, dict) or str(obj.get("code")) != "0" or not isinstance(obj.get("data"), list):
        raise rest.RestError(f"instruments response is not OKX success: {body[:200]!r}")
    return {item["instId"]: item for item in obj["data"] if isinstance(item, dict) and "instId" in item}


async def fetch_swap_instruments(rest_url: str, timeout: float) -> dict[str, dict[str, Any]]:
    """instId → instrument object of every SWAP instrument OKX lists (raises rest.RestError)."""
    return parse_instruments(await rest.get(rest_url, INSTRUMENTS_PATH, {"instType": "SWAP"}, timeout))


async def fetch_instruments(rest_url: str, inst_ids: Iterable[str], timeout: float) -> dict[str, dict]:
    """The instrument objects of `inst_ids`; raises UnknownInstruments naming any OKX does not list."""
    listed = await fetch_swap_instruments(rest_url, timeout)
    wanted = list(inst_ids)
    unknown = [i for i in wanted if i not in listed]
    if unknown:
        raise UnknownInstruments(unknown)
    return {i: listed[i] for i in wanted}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stored(path: Path) -> dict[str, Any] | None:
    """The stored instrument object without `fetched_at`, or None if there is no readable one."""
    try:
        obj = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return {k: v for k, v in obj.items() if k != "fetched_at"} if isinstance(obj, dict) else None


def store_instrument(data_dir: Path, instrument: dict[str, Any], fetched_ms: int) -> dict[str, tuple[Any, Any]] | None:
    """Write the latest object; append to history if it is new or changed.

    Returns field → (old, new) of every changed field, or None when nothing was stored before.
    """
    inst_id = instrument["instId"]
    latest_path = layout.meta_path(data_dir, inst_id)
    previous = _stored(latest_path)
    current = {**instrument, "fetched_at": format_ts_ms(fetched_ms)}
    before = previous or {}
    changes = {k: (before.get(k), instrument.get(k)) for k in sorted(set(before) | set(instrument))
               if before.get(k) != instrument.get(k)}
    _atomic_write(latest_path, orjson.dumps(current, option=orjson.OPT_INDENT_2))
    if changes:
        history = layout.meta_history_path(data_dir, inst_id)
        with open(history, "ab") as f:
            f.write(orjson.dumps(current) + b"\n")
            f.flush()
            os.fsync(f.fileno())
    return None if previous is None else changes
