"""An hour file's content whatever its form: `{HH}.jsonl` as it is, a `.jsonl.gz` decompressed, the
tape's `{HH}.parquet` archive decoded (l2_lake.format.tape_columns). Every reader and archiver goes
through here, so any form of an hour reads as the same bytes.

A damaged archive raises OSError (gzip's BadGzipFile, EOFError and zlib.error are turned into it,
as is l2_lake.format.tape_columns.TapeColumnsError, which already is one)."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from l2_lake.format import layout


class DamagedArchive(OSError):
    """An archive that does not decompress (or decode) to content."""


def content_of(data: bytes, name: str) -> bytes:
    """The content of a file called `name` whose bytes are `data`."""
    try:
        if layout.is_tape_archive(name):
            from l2_lake.format import tape_columns  # pyarrow: only where a tape archive is read

            return tape_columns.decode(data)
        if name.endswith(layout.ARCHIVE_SUFFIX):
            return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DamagedArchive(f"{name} does not decompress ({type(exc).__name__}: {exc})") from exc
    return data


@contextmanager
def open_content(path: Path, name: str | None = None) -> Iterator[IO[bytes]]:
    """A binary reader of the content of the file at `path`, a file called `name` (default: its own
    name; a temp file gives the name it will have): a gzip streamed, the tape's Parquet decoded whole."""
    name = name or path.name
    if layout.is_tape_archive(name):
        yield io.BytesIO(content_of(path.read_bytes(), name))
    elif name.endswith(layout.ARCHIVE_SUFFIX):
        with gzip.open(path, "rb") as f:
            yield f
    else:
        with open(path, "rb") as f:
            yield f
