"""okx-l2 collector: the capture process. It subscribes to OKX `books` (400 levels), keeps each book
exact with the lake library's engine (`l2_lake.book`), writes hourly JSONL into the lake, and ships
closed hours to object storage.

A standalone asyncio process that never imports Dagster. It holds the process only: command line
and config, the supervised tasks, the feed, the writer thread, status and systemd, the shipper, and
the OKX simulator it is tested against (`collector.simulator`). The lake's formats and rules are
`l2_lake`'s.
"""

__version__ = "0.1.0"
