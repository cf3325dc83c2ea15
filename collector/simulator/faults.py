"""Fault plan of the simulator: which failures to inject, and how often.

Spec syntax (the `--faults` flag): comma-separated items, each `name=probability` (a chance per
100 ms tick, or per event for the scopes below) or a bare `name` (always on, probability 1):

    drop=0.02,disconnect=0.002,no_snapshot

Scopes: book faults are drawn per instrument per tick, connection faults per connection per tick,
`no_snapshot` per subscription, REST faults per `/market/books` request. Every draw comes from a
random generator seeded from `--seed` and the scope's name, so a run is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

BOOK_FAULTS: tuple[str, ...] = ("drop", "reset", "bad_checksum", "zero_checksum", "heartbeat")
CONNECTION_FAULTS: tuple[str, ...] = ("silence", "malformed", "error", "notice", "disconnect")
SUBSCRIPTION_FAULTS: tuple[str, ...] = ("no_snapshot",)
REST_FAULTS: tuple[str, ...] = ("rest_429", "rest_slow", "rest_error")
FAULT_NAMES: tuple[str, ...] = BOOK_FAULTS + CONNECTION_FAULTS + SUBSCRIPTION_FAULTS + REST_FAULTS

FAULT_HELP = {
    "drop": "skip sending one update (the true book still advances: the client sees a gap)",
    "reset": "sequence reset: seqId jumps lower, prevSeqId still chains",
    "bad_checksum": "a wrong non-zero checksum for a correct book",
    "zero_checksum": "checksum 0 (production OKX today)",
    "heartbeat": "an empty update with seqId == prevSeqId",
    "silence": "the connection sends nothing, not even pong, for --silence-seconds",
    "malformed": "a frame that is not valid JSON",
    "error": "an error event (code 60012)",
    "notice": "a 64008 service-upgrade notice, then a close after --notice-grace",
    "disconnect": "abrupt TCP close without a close frame",
    "no_snapshot": "no WS snapshot after subscribe: only updates (client aligns over REST)",
    "rest_429": "REST books answers HTTP 429, OKX code 50011",
    "rest_slow": "REST books answers after 2 s",
    "rest_error": "REST books answers HTTP 500, OKX code 50001",
}


@dataclass(frozen=True)
class FaultPlan:
    """Probability of each fault; absent faults never fire on their own."""

    probabilities: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def probability(self, name: str) -> float:
        return self.probabilities.get(name, 0.0)

    def fires(self, name: str, rng: random.Random) -> bool:
        """One draw for `name`; consumes randomness only when the probability is strictly between
        0 and 1, so a plan's draws depend on nothing but the plan and the seed."""
        p = self.probability(name)
        if p <= 0.0:
            return False
        return p >= 1.0 or rng.random() < p


def _valid_names() -> str:
    return ", ".join(FAULT_NAMES)


def parse_faults(spec: str | None) -> FaultPlan:
    """Parse a `--faults` spec; raises ValueError naming the bad item and the valid names."""
    probabilities: dict[str, float] = {}
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r} in --faults item {item!r}; valid names: {_valid_names()}")
        if name in probabilities:
            raise ValueError(f"fault {name!r} given twice in --faults {spec!r}")
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
    return FaultPlan(MappingProxyType(probabilities))
