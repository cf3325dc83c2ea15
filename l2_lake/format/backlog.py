"""The shipper's published backlog (`{data_dir}/.l2-ship-backlog.json`): its name and its reader, for the
pipeline's freshness check and for operators. The capture process writes it (`collector.ship`). A
URL's password in it (an older shipper's error text) is redacted as it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from l2_lake.logs import redact

STATE_NAME = ".l2-ship-backlog.json"


def read_backlog_file(data_dir: Path) -> dict[str, Any] | None:
    """The shipper's last published backlog (`.l2-ship-backlog.json`), or None if there is none."""
    try:
        data = (Path(data_dir) / STATE_NAME).read_bytes()
        return orjson.loads(redact(data.decode()))
    except (FileNotFoundError, UnicodeDecodeError, orjson.JSONDecodeError):
        return None
