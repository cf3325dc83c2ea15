"""Instrument metadata: fetch OKX SWAP instruments over REST and keep them in the lake (docs/CONTRACT.md §1).

`meta/okx/instruments/{instId}.json` holds the latest object plus `fetched_at`; the `.history.jsonl`
beside it gets a line whenever any field other than `fetched_at` changed, so tick size or contract
value changes can be applied to old data.

Several writers keep these files (the pipeline and each collector fetch the same instruments), so a
shared copy is merged, never owned: it keeps the object fetched last (`fetched_later`) and every
history line any writer wrote (`merged_history`), in `fetched_at` order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from l2_lake.format import layout
from l2_lake.format.record import format_ts_ms
from l2_lake.store.files import atomic_write
from l2_lake.venues import rest


class UnknownInstruments(ValueError):
    """Configured instIds that OKX does not list as SWAP instruments."""

    def __init__(self, inst_ids: list[str]) -> None:
        super().__init__(
            f"unknown instrument(s) {', '.join(inst_ids)}: OKX lists no SWAP instrument with that instId; "
            "check the spelling (e.g. BTC-USDT-SWAP) or remove it from --instruments"
        )
        self.inst_ids = inst_ids


async def fetch_swap_instruments(client: rest.RestClient) -> dict[str, dict[str, Any]]:
    """instId → instrument object of every perpetual swap the venue lists (raises rest.RestError)."""
    path, params = client.venue.instruments_request
    return client.venue.parse_instruments(await client.get(path, params))


def require_listed(listed: dict[str, dict[str, Any]], inst_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The objects of `inst_ids`; raises UnknownInstruments naming any OKX does not list."""
    wanted = list(inst_ids)
    unknown = [i for i in wanted if i not in listed]
    if unknown:
        raise UnknownInstruments(unknown)
    return {i: listed[i] for i in wanted}


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
    atomic_write(latest_path, orjson.dumps(current, option=orjson.OPT_INDENT_2))
    if changes:
        history = layout.meta_history_path(data_dir, inst_id)
        with open(history, "ab") as f:
            end = f.tell()
            try:
                f.write(orjson.dumps(current) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                f.truncate(end)  # a full disk must not leave a torn history line
                raise
    return None if previous is None else changes


def _fetched_at(line: bytes) -> str:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ""
    return str(obj.get("fetched_at", "")) if isinstance(obj, dict) else ""


def fetched_later(ours: bytes, theirs: bytes) -> bool:
    """True if the instrument object `ours` was fetched after `theirs` (or `theirs` has no time)."""
    return _fetched_at(ours) > _fetched_at(theirs)


def merged_history(theirs: bytes, ours: bytes) -> bytes:
    """The union of two `.history.jsonl` contents (a line being appended, with no newline yet, left
    out), each line once, in `fetched_at` order: the same bytes whichever side is which, and a
    merge of a merge changes nothing."""
    lines = {line for text in (theirs, ours) for line in text[:text.rfind(b"\n") + 1].splitlines() if line}
    return b"".join(line + b"\n" for line in sorted(lines, key=lambda line: (_fetched_at(line), line)))
