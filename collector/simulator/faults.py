"""Fault plan of the simulator: which failures to inject, and how often.

Spec syntax (the `--faults` flag): comma-separated items, each `name=probability` (a chance per
100 ms tick, or per event for the scopes below) or a bare `name` (always on, probability 1):

    drop=0.02,disconnect=0.002,no_snapshot,rest_ts_skew=250

Valued faults (`VALUED_FAULTS`) take a number instead of a probability and are always on:
`rest_ts_skew=MS` stamps every REST books answer 0..MS ms late (whole ms >= 0); a bare
`rest_ts_skew` means its default, 500 ms.

Scopes: book faults are drawn per instrument per tick, connection faults per connection per tick,
`no_snapshot` per subscription, REST faults per `/market/books` request, instruments faults per
`/public/instruments` request. Every draw comes from a random generator seeded from `--seed` and
the scope's name, so a run is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

BOOK_FAULTS: tuple[str, ...] = ("drop", "reset", "bad_checksum", "zero_checksum", "heartbeat", "ts_micro")
CONNECTION_FAULTS: tuple[str, ...] = ("silence", "malformed", "error", "notice", "disconnect")
SUBSCRIPTION_FAULTS: tuple[str, ...] = ("no_snapshot",)
REST_FAULTS: tuple[str, ...] = ("rest_429", "rest_slow", "rest_error", "rest_cut", "rest_html", "rest_ts_skew")
INSTRUMENTS_FAULTS: tuple[str, ...] = ("instruments_html", "instruments_cut")
FAULT_NAMES: tuple[str, ...] = (
    BOOK_FAULTS + CONNECTION_FAULTS + SUBSCRIPTION_FAULTS + REST_FAULTS + INSTRUMENTS_FAULTS
)
VALUED_FAULTS: Mapping[str, int] = MappingProxyType({"rest_ts_skew": 500})  # name → default value (ms)

FAULT_HELP = {
    "drop": "skip sending one update (the true book still advances: the client sees a gap)",
    "reset": "sequence reset: seqId jumps lower, prevSeqId still chains",
    "bad_checksum": "a wrong non-zero checksum for a correct book",
    "zero_checksum": "checksum 0 (production OKX today)",
    "heartbeat": "an empty update with seqId == prevSeqId",
    "ts_micro": "an update whose ts is in microseconds (the true ms ts x 1000)",
    "silence": "the connection sends nothing, not even pong, for --silence-seconds",
    "malformed": "a frame that is not valid JSON",
    "error": "an error event (code 60012)",
    "notice": "a 64008 service-upgrade notice, then a close after --notice-grace",
    "disconnect": "abrupt TCP close without a close frame",
    "no_snapshot": "no WS snapshot after subscribe: only updates (client aligns over REST)",
    "rest_429": "REST books answers HTTP 429, OKX code 50011",
    "rest_slow": "REST books answers after 2 s",
    "rest_error": "REST books answers HTTP 500, OKX code 50001",
    "rest_cut": "REST books promises the full Content-Length, sends half the body, then closes",
    "rest_html": "REST books answers HTTP 200 with an HTML maintenance page",
    "rest_ts_skew": "every REST books ts stamped 0..MS ms (uniform) later than its book state, same seqId "
    "and levels (rest_ts_skew=MS; bare: 500 ms)",
    "instruments_html": "REST instruments answers HTTP 200 with an HTML maintenance page",
    "instruments_cut": "REST instruments promises the full Content-Length, sends half the body, then closes",
}


@dataclass(frozen=True)
class FaultPlan:
    """Probability of each fault, and the value of each valued fault; absent faults never fire on
    their own."""

    probabilities: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    values: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def probability(self, name: str) -> float:
        return self.probabilities.get(name, 0.0)

    def value(self, name: str) -> int | None:
        """The value of valued fault `name` (e.g. rest_ts_skew's maximum ms), None when it is off."""
        return self.values.get(name)

    def fires(self, name: str, rng: random.Random) -> bool:
        """One draw for `name`; consumes randomness only when the probability is strictly between
        0 and 1, so a plan's draws depend on nothing but the plan and the seed."""
        p = self.probability(name)
        if p <= 0.0:
            return False
        return p >= 1.0 or rng.random() < p


def _valid_names() -> str:
    return ", ".join(FAULT_NAMES)


def parse_ms(text: str) -> int:
    """A whole number of milliseconds >= 0 (a valued fault's value); ValueError otherwise."""
    try:
        ms = int(text)
    except ValueError:
        ms = -1
    if ms < 0:
        raise ValueError(f"expected a whole number of milliseconds >= 0, got {text!r}")
    return ms


def parse_faults(spec: str | None) -> FaultPlan:
    """Parse a `--faults` spec; raises ValueError naming the bad item and the valid names."""
    probabilities: dict[str, float] = {}
    values: dict[str, int] = {}
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r} in --faults item {item!r}; valid names: {_valid_names()}")
        if name in probabilities or name in values:
            raise ValueError(f"fault {name!r} given twice in --faults {spec!r}")
        if name in VALUED_FAULTS:
            try:
                values[name] = parse_ms(value) if sep else VALUED_FAULTS[name]
            except ValueError:
                raise ValueError(
                    f"bad value in --faults item {item!r}: expected {name}=MS with MS a whole number of "
                    f"milliseconds >= 0, or a bare {name} for {VALUED_FAULTS[name]} ms"
                ) from None
            continue
        if not sep:
            probabilities[name] = 1.0
            continue
        try:
            p = float(value)
        except ValueError:
            p = math.nan
        if not 0.0 <= p <= 1.0:
            raise ValueError(
                f"bad probability in --faults item {item!r}: expected {name}=P with 0 <= P <= 1 "
                f"(per 100 ms tick), or a bare {name} for always on"
            )
        probabilities[name] = p
    return FaultPlan(MappingProxyType(probabilities), MappingProxyType(values))
