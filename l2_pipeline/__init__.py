"""okx-l2 pipeline: the Dagster code location over the collector's lake (`l2_pipeline.definitions`),
and research access to the lake without Dagster: `read_books`, `book_at` (`l2_lake.research.read`).

Pure modules (no Dagster): read, export, features, features_hour, plots, replicas, hours, hour_stats,
quality, selection, archive, curated, curated_migration, retention,
instruments, stats_cache. Dagster modules: partitions, resources, keys, assets, checks, jobs,
registry, sensors, schedules, definitions. `python -m bench.lake` times registration and compression.
"""

from l2_lake.research.read import ReadError, book_at, read_books

__all__ = ["ReadError", "book_at", "read_books"]
