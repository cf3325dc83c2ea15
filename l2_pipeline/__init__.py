"""okx-l2 pipeline: the Dagster layer over the lake (`l2_pipeline.definitions` is the code location).

Every module here is Dagster wiring: partitions, resources, keys, the check registry, assets (the
lake's hours, the tape's, the replicas'), checks, sensors, schedules, jobs and dashboards. What they
compute is the lake library's (`l2_lake`). `read_books` and `book_at` are re-exported from
`l2_lake` for code written before it existed.
"""

from l2_lake.research.read import ReadError, book_at, read_books

__all__ = ["ReadError", "book_at", "read_books"]
