"""The tape's line format (docs/CONTRACT.md §7): the kinds of line, and how a `books` frame's line is laid
out (`{"t":"ws","r":<receive ms>,"m":<the frame's JSON text>}`), so the recorder writes it, and the
replay, the statistics and the Parquet archive find the frame, without a JSON round trip.
"""

from __future__ import annotations

WS_PREFIX = b'{"t":"ws","r":'  # how a frame's line begins; its receive time follows, then FRAME_AT and the frame
FRAME_AT = b',"m":'
LINE_KINDS = frozenset({"book", "ws", "rest", "sub", "drop", "rest_failed", "tick", "lost", "synced"})


def frame_bytes(raw: str | bytes) -> bytes:
    """A frame's JSON text as one line: a newline can only be whitespace between JSON tokens."""
    data = raw.encode() if isinstance(raw, str) else raw
    return data.replace(b"\r", b" ").replace(b"\n", b" ") if b"\n" in data or b"\r" in data else data
