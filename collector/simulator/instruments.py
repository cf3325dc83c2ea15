"""Contract specifications of simulated instruments and their OKX `/public/instruments` objects.

A few real perpetuals have their real tick and lot sizes; any other instId gets a plausible
specification derived deterministically from its name.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """What the simulator needs to know about one instrument; prices and sizes as OKX strings."""

    inst_id: str
    tick_sz: str
    lot_sz: str
    ct_val: str
    start_px: str
    list_time: str = "1573557408000"


_KNOWN: dict[str, InstrumentSpec] = {
    spec.inst_id: spec
    for spec in (
        InstrumentSpec("BTC-USDT-SWAP", "0.1", "0.01", "0.01", "97000"),
        InstrumentSpec("ETH-USDT-SWAP", "0.01", "0.01", "0.1", "3400"),
        InstrumentSpec("SOL-USDT-SWAP", "0.01", "0.01", "1", "180"),
        InstrumentSpec("XRP-USDT-SWAP", "0.0001", "0.01", "100", "2.5"),
        InstrumentSpec("DOGE-USDT-SWAP", "0.00001", "0.01", "1000", "0.3"),
        InstrumentSpec("BTC-USD-SWAP", "0.1", "1", "100", "97000", "1535424203000"),
        InstrumentSpec("ETH-USD-SWAP", "0.01", "1", "10", "3400", "1535424203000"),
    )
}


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def instrument_spec(inst_id: str) -> InstrumentSpec:
    """The known specification, or one derived from a hash of `inst_id` (about 4-5 significant
    digits of price precision, lot size 1)."""
    known = _KNOWN.get(inst_id)
    if known is not None:
        return known
    digest = zlib.crc32(inst_id.encode())
    exponent = digest % 7 - 2  # start price in [10^exponent, 10^(exponent+1))
    mantissa = 1000 + (digest // 7) % 9000
    start = Decimal(mantissa).scaleb(exponent - 3)
    tick = Decimal(1).scaleb(exponent - 4)
    return InstrumentSpec(inst_id, _plain(tick), "1", "1", _plain(start))


def _currencies(inst_id: str) -> tuple[str, str]:
    parts = inst_id.split("-")
    return parts[0], parts[1] if len(parts) > 2 else "USDT"


def instrument_object(spec: InstrumentSpec) -> dict[str, Any]:
    """An OKX SWAP instrument object in the current (2025+) field set."""
    base, quote = _currencies(spec.inst_id)
    inverse = quote == "USD"
    family = f"{base}-{quote}"
    return {
        "alias": "",
        "auctionEndTime": "",
        "baseCcy": "",
        "category": "1",
        "contTdSwTime": "",
        "ctMult": "1",
        "ctType": "inverse" if inverse else "linear",
        "ctVal": spec.ct_val,
        "ctValCcy": quote if inverse else base,
        "expTime": "",
        "futureSettlement": False,
        "instFamily": family,
        "instId": spec.inst_id,
        "instIdCode": 10000 + zlib.crc32(spec.inst_id.encode()) % 90000,
        "instType": "SWAP",
        "lever": "100",
        "listTime": spec.list_time,
        "lotSz": spec.lot_sz,
        "maxIcebergSz": "100000000.0000000000000000",
        "maxLmtAmt": "20000000",
        "maxLmtSz": "100000000",
        "maxMktAmt": "",
        "maxMktSz": "12000",
        "maxPlatOILmt": "",
        "maxStopSz": "12000",
        "maxTriggerSz": "100000000.0000000000000000",
        "maxTwapSz": "100000000.0000000000000000",
        "minSz": spec.lot_sz,
        "openType": "",
        "optType": "",
        "posLmtAmt": "",
        "posLmtPct": "",
        "preMktSwTime": "",
        "quoteCcy": "",
        "ruleType": "normal",
        "settleCcy": base if inverse else quote,
        "state": "live",
        "stk": "",
        "tickSz": spec.tick_sz,
        "tradeQuoteCcyList": [],
        "uly": family,
    }
