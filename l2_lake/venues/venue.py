"""The seam between the venue-neutral collector and an exchange: what a venue must provide.

Engine, feed, store, layout, REST client and the Dagster pipeline know an exchange only through a
`Venue`: its names in the lake, its limits, its wire format, its sequence and checksum rules. OKX is
the one venue (`l2_lake.venues.okx`); `l2_lake.venues.registry` is the registry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from l2_lake.venues.messages import BookMessage, EventMessage, Pong


class Unaligned(enum.Enum):
    HOLE = "hole"  # the snapshot is older than the buffer, or cannot be placed in it
    AHEAD = "ahead"  # the snapshot is newer than every buffered update: wait for the next one


@dataclass(frozen=True)
class Venue:
    # names in the lake and in records (docs/CONTRACT.md §1-§2)
    name: str  # raw/{name}/{dataset}/..., record field `exchange`
    dataset: str
    market: str
    channel: str
    inst_id_pattern: str  # what may become a path component
    # endpoints and limits
    ws_url: str
    rest_url: str
    max_channels_per_connection: int
    connections_per_second: float
    subscribe_requests_per_hour: int
    rest_requests_per_2s: Mapping[str, int]  # path -> limit
    ping: str
    idle_close_s: float  # the venue closes a connection silent this long
    unknown_instrument_code: str  # an error event code meaning "no such instrument"
    service_upgrade_code: str  # a notice code meaning "reconnect now"
    # wire format
    decode: Callable[[str | bytes], Pong | EventMessage | list[BookMessage]]
    decode_rest_books: Callable[[Any, str], BookMessage]
    parse_rest_body: Callable[[str, bytes], Any]  # (url, body) -> data, or raise RestError
    subscription_request: Callable[[str, list[str]], str]
    books_request: Callable[[str], tuple[str, dict[str, str]]]
    instruments_request: tuple[str, dict[str, str]]
    parse_instruments: Callable[[Any], dict[str, dict[str, Any]]]
    # book rules
    follows: Callable[[int | None, int | None], bool]
    alignment_start: Callable[[Sequence[BookMessage], int, int], int | Unaligned]
    # from the best levels' texts, at most checksum_depth a side: (bid prices, bid sizes, ask prices, ask sizes)
    book_checksum: Callable[[list[str], list[str], list[str], list[str]], int]
    checksum_depth: int
