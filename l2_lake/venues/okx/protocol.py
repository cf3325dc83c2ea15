"""OKX wire format: decoding public WebSocket frames and REST books into the engine's messages
(`l2_lake.venues.messages`), with clear errors for bad input, and the requests we send.

A frame is one of: the text `pong`; an event (`subscribe`/`unsubscribe` ack, `error`, `notice`);
or a `books` push carrying one or more book messages. Anything else raises `BadFrame` naming what
was wrong, so the caller can count it, log it once per kind and carry on.
"""

from __future__ import annotations

from typing import Any

import orjson

from l2_lake.venues.messages import PONG, BadFrame, BookMessage, EventMessage, Pong
from l2_lake.venues.rest import RestError, preview

_ACTIONS = frozenset(("snapshot", "update"))


def _int_field(item: dict, name: str, inst_id: str, required: bool) -> int | None:
    value = item.get(name)
    if value is None:
        if required:
            raise BadFrame("missing_field", f"books message without {name!r}", inst_id)
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadFrame("wrong_type", f"{name} is {type(value).__name__}, expected integer", inst_id)
    try:
        return int(value)
    except ValueError:
        raise BadFrame("wrong_type", f"{name}={value!r} is not an integer", inst_id) from None


def book_message(item: Any, inst_id: str, action: str) -> BookMessage:
    """Validate one `data` element of a books push (or a REST books result) into a BookMessage."""
    try:  # fast path: the shape OKX sends today, or before seqIds (2022) without both of them
        bids, asks, ts = item["bids"], item["asks"], item["ts"]
        seq_id, prev_seq_id, checksum = item.get("seqId"), item.get("prevSeqId"), item.get("checksum", 0)
        if (type(bids) is list and type(asks) is list and type(checksum) is int and type(ts) is str
                and ((type(seq_id) is int and type(prev_seq_id) is int) or seq_id is prev_seq_id is None)):
            return BookMessage(inst_id, action, bids, asks, int(ts), checksum, seq_id, prev_seq_id)
    except (KeyError, TypeError, ValueError):
        pass
    return _validated_book_message(item, inst_id, action)


def _validated_book_message(item: Any, inst_id: str, action: str) -> BookMessage:
    """The slow path: accept legacy/odd shapes where unambiguous, else say exactly what is wrong."""
    if not isinstance(item, dict):
        raise BadFrame("wrong_type", f"data element is {type(item).__name__}, expected object", inst_id)
    bids, asks = item.get("bids"), item.get("asks")
    if not isinstance(bids, list) or not isinstance(asks, list):
        raise BadFrame("missing_field", "books message without bids/asks lists", inst_id)
    ts_ms = _int_field(item, "ts", inst_id, required=True)
    checksum = _int_field(item, "checksum", inst_id, required=False) or 0
    seq_id = _int_field(item, "seqId", inst_id, required=False)
    prev_seq_id = _int_field(item, "prevSeqId", inst_id, required=False)
    if (seq_id is None) != (prev_seq_id is None):
        raise BadFrame("missing_field", "books message with only one of seqId/prevSeqId", inst_id)
    return BookMessage(inst_id, action, bids, asks, ts_ms, checksum, seq_id, prev_seq_id)


def _event(obj: dict) -> EventMessage:
    arg = obj.get("arg")
    inst_id = arg.get("instId") if isinstance(arg, dict) else None
    code = obj.get("code")
    return EventMessage(
        str(obj["event"]), inst_id if isinstance(inst_id, str) else None,
        None if code is None else str(code), obj.get("msg"),
    )


def decode(raw: str | bytes) -> Pong | EventMessage | list[BookMessage]:
    """Decode one WS frame. Raises BadFrame for anything malformed or unexpected."""
    if raw == "pong" or raw == b"pong":
        return PONG
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        start = raw[:80] if isinstance(raw, str) else raw[:80].decode("utf-8", "replace")
        raise BadFrame("malformed_json", f"{exc} in frame starting {start!r}") from None
    if not isinstance(obj, dict):
        raise BadFrame("wrong_type", f"frame is a JSON {type(obj).__name__}, expected object")
    if "event" in obj:
        return _event(obj)
    arg, data = obj.get("arg"), obj.get("data")
    if not isinstance(arg, dict) or not isinstance(data, list):
        raise BadFrame("unknown_frame", f"neither event nor data push: keys {sorted(obj)[:8]}")
    inst_id = arg.get("instId")
    if arg.get("channel") != "books" or not isinstance(inst_id, str):
        raise BadFrame("unknown_channel", f"push for channel {arg.get('channel')!r}", None)
    action = obj.get("action")
    if action not in _ACTIONS:
        raise BadFrame("unknown_action", f"action {action!r}", inst_id)
    return [book_message(item, inst_id, action) for item in data]


def decode_rest_books(data: Any, inst_id: str) -> BookMessage:
    """The `data` of a `GET /api/v5/market/books` answer as a snapshot BookMessage (needs seqId)."""
    if not isinstance(data, list) or len(data) != 1:
        raise BadFrame("rest_error", "REST books without exactly one data element", inst_id)
    item = data[0]
    if isinstance(item, dict):
        item = {"prevSeqId": -1, **item}  # REST results carry seqId only
    msg = book_message(item, inst_id, "snapshot")
    if msg.seq_id is None:
        raise BadFrame("missing_field", "REST books result without seqId: cannot align", inst_id)
    return msg


def subscription_request(op: str, inst_ids: list[str]) -> str:
    """The text of a `subscribe`/`unsubscribe` request for the `books` channel of `inst_ids`."""
    return orjson.dumps({"op": op, "args": [{"channel": "books", "instId": i} for i in inst_ids]}).decode()


def books_request(inst_id: str) -> tuple[str, dict[str, str]]:
    """Path and query of the REST snapshot used to align a book without a WS snapshot."""
    return "/api/v5/market/books", {"instId": inst_id, "sz": "400"}


def parse_rest_body(url: str, body: bytes) -> Any:
    """The `data` of an OKX JSON envelope with code "0"; RestError naming what the body was instead."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RestError(f"GET {url}: answer is not JSON (a maintenance or error page?): "
                        f"{preview(body)!r}") from None
    if not isinstance(obj, dict) or "code" not in obj:
        raise RestError(f"GET {url}: answer is not an OKX envelope: {preview(body)!r}")
    code = str(obj["code"])
    if code != "0":
        raise RestError(f"GET {url}: OKX code {code}: {obj.get('msg')!r}", code=code)
    return obj.get("data")


def parse_instruments(data: Any) -> dict[str, dict[str, Any]]:
    """instId → instrument object from the `data` of a `/public/instruments` answer."""
    if not isinstance(data, list):
        raise RestError(f"instruments answer: `data` is {type(data).__name__}, expected a list")
    return {item["instId"]: item for item in data if isinstance(item, dict) and isinstance(item.get("instId"), str)}
