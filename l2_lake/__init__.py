"""okx-l2's lake as a library: everything both the capture process (`collector`) and the Dagster
layer (`l2_pipeline`) need to know about the lake, and nothing that runs them.

It imports neither of them nor Dagster, and owns no event loop. Subpackages by role, lowest first
(a subpackage imports only those before it):

- `venues`: the exchange's rules: OKX's wire protocol, seqId/prevSeqId, checksum, the Venue registry;
- `format`: the record, the layout, the hour files (JSONL, gzip, tape Parquet) and their digests;
- `store`: where the lake lives: local files, a directory or a bucket behind one listing interface;
- `book`: the book engine: order book, `InstrumentSync`, the tape recorder and its replay;
- `quality`: hour statistics and the quality verdicts the checks report;
- `tiers`: archive, curated Parquet, features, resampled books, the replica merge, retention;
- `research`: `read_books`, `book_at`, export;
- `pictures`: the figures (lake health, an hour's book, a tape hour).

Research access: `from l2_lake import read_books, book_at`. They are loaded on first use, so
the capture process, which imports `l2_lake.venues` and `l2_lake.book`, never loads pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from l2_lake.research.read import ReadError, book_at, read_books

__all__ = ["ReadError", "book_at", "read_books"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from l2_lake.research import read

        return getattr(read, name)
    raise AttributeError(f"module 'l2_lake' has no attribute {name!r}")
