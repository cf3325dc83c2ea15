"""Instrument metadata refresh: OKX `GET /api/v5/public/instruments?instType=SWAP` → lake meta files.

Parsing and storage are the collector's (`l2_lake.store.instrument_meta.parse_instruments`,
`l2_lake.store.instrument_meta.store_instrument`): one definition of `meta/okx/instruments/{instId}.json` and its
`.history.jsonl`, which gets a line only when a field other than `fetched_at` changed. This module
runs the fetch synchronously and turns the field-level diff `store_instrument` returns into the run's
metadata, because tick size and contract value changes decide how old data must be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2_lake.store import instrument_meta as meta

IMPORTANT_FIELDS = ("tickSz", "ctVal", "ctMult", "lotSz", "minSz", "state", "ctType", "settleCcy")


@dataclass(frozen=True)
class FieldChange:
    inst_id: str
    field: str
    old: Any
    new: Any


@dataclass
class RefreshResult:
    stored: list[str] = field(default_factory=list)
    new_instruments: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # wanted but not listed by OKX
    changes: list[FieldChange] = field(default_factory=list)
    listed: int = 0

    @property
    def important_changes(self) -> list[FieldChange]:
        return [c for c in self.changes if c.field in IMPORTANT_FIELDS]


def refresh_instruments(
    data_dir: Path, wanted: list[str], listed: dict[str, dict[str, Any]], fetched_ms: int
) -> RefreshResult:
    """Store the latest object of every wanted instId OKX lists; diff against what was stored."""
    result = RefreshResult(listed=len(listed))
    for inst_id in sorted(set(wanted)):
        instrument = listed.get(inst_id)
        if instrument is None:
            result.missing.append(inst_id)
            continue
        changes = meta.store_instrument(data_dir, instrument, fetched_ms)
        result.stored.append(inst_id)
        if changes is None:
            result.new_instruments.append(inst_id)
            continue
        result.changes.extend(FieldChange(inst_id, name, old, new) for name, (old, new) in changes.items())
    return result
