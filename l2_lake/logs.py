"""Structured logging: one logfmt line per log call, with `event` and `instId` fields.

`log_event(logger, level, event, inst_id, msg, **fields)` is the only way the collector and the lake library log, so
every line can be filtered by instrument and event (`grep 'event=gap'`).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

# `scheme://user:password@`: the password part of a URL's userinfo (AWS_ENDPOINT_URL may carry one)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (`s3+http://user:***@host`)."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    """`ts=... level=... logger=... event=... instId=... msg="..." key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"logger={record.name}"]
        extras = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
        for key in ("event", "instId"):
            if key in extras:
                parts.append(f"{key}={_quote(extras.pop(key))}")
        parts.append(f"msg={_quote(record.getMessage())}")
        parts.extend(f"{k}={_quote(v)}" for k, v in extras.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return redact(" ".join(parts))


LOGGER_ROOTS = ("collector", "l2_lake")  # the capture process and the lake library it runs


def configure(level: str = "INFO") -> None:
    """Send the collector's and the lake library's logs to stderr as logfmt."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    for name in LOGGER_ROOTS:
        root = logging.getLogger(name)
        root.handlers[:] = [handler]
        root.setLevel(level.upper())
        root.propagate = False


def log_event(logger: logging.Logger, level: int, event: str, inst_id: str | None, msg: str,
              **fields: Any) -> None:
    extra: dict[str, Any] = {"event": event, **fields}
    if inst_id is not None:
        extra["instId"] = inst_id
    logger.log(level, msg, extra=extra)
