"""OKX, the collector's venue: everything OKX-specific, behind the `l2_lake.venues.venue.Venue` seam.

`protocol` (wire format: frames, REST envelope, requests), `sequence` (seqId/prevSeqId rules and
REST alignment), `checksum` (OKX's CRC32 of the top 25), and `simulator` (a local OKX-protocol
server with fault injection, the test oracle). Facts and their dates: docs/CONTRACT.md §6.
"""

from __future__ import annotations

from l2_lake.venues.okx import checksum, protocol, sequence
from l2_lake.venues.venue import Venue

OKX = Venue(
    name="okx",
    dataset="l2_perps",
    market="perp",
    channel="books",
    inst_id_pattern=r"^[A-Z0-9]+(-[A-Z0-9]+)+$",
    ws_url="wss://ws.okx.com:8443/ws/v5/public",
    rest_url="https://www.okx.com",
    max_channels_per_connection=30,
    connections_per_second=3.0,
    subscribe_requests_per_hour=480,
    rest_requests_per_2s={"/api/v5/market/books": 40, "/api/v5/public/instruments": 20},
    ping="ping",
    idle_close_s=30.0,
    unknown_instrument_code="60018",
    service_upgrade_code="64008",
    decode=protocol.decode,
    decode_rest_books=protocol.decode_rest_books,
    parse_rest_body=protocol.parse_rest_body,
    subscription_request=protocol.subscription_request,
    books_request=protocol.books_request,
    instruments_request=("/api/v5/public/instruments", {"instType": "SWAP"}),
    parse_instruments=protocol.parse_instruments,
    follows=sequence.follows,
    alignment_start=sequence.alignment_start,
    book_checksum=checksum.book_checksum,
    checksum_depth=checksum.CHECKSUM_DEPTH,
)
