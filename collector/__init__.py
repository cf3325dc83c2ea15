"""okx-l2 collector: captures OKX `books` (400 levels) into an hourly JSONL lake.

Standalone asyncio process; never imports Dagster. The lake layout (`l2_lake.format.layout`) and
record schema (`l2_lake.format.record`) defined here are the single definitions the pipeline reads.
"""

__version__ = "0.1.0"
