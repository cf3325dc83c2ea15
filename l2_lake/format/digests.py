"""Content digests of an hour and its verified archives: sha256, line count and size of the content,
whatever its form (`{HH}.jsonl`, `.jsonl.gz`, the tape's `.parquet`), and the gzip that the shipper
and the archive step both make (`gzip_writer`: ISA-L's igzip at level 3, mtime 0, the `.jsonl` name
as member name), decompressed again with the standard library's gzip and compared before it is
trusted, so every archive is proven readable by any gzip. One definition, so whoever compresses an
hour makes the same bytes.

Why igzip (python-isal) at level 3 (`python -m bench.gzip_levels HOUR.jsonl`, CPU, best of 3; docs/
PERFORMANCE.md): on a 15.6 MB hour of records whose sizes vary like a real book's (4x compressible)
it takes 0.06x the CPU of zlib -6 for an archive 1.13x as large; on 39 MB simulator hours (30x
compressible) 0.24-0.25x the CPU for 1.03-1.24x the size. zlib-ng was slower at every size igzip reached.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from isal import igzip

from l2_lake.format.hour_content import DamagedArchive, content_of, open_content

CHUNK = 1 << 20
COMPRESS_LEVEL = 3  # ISA-L's levels are 0-3


def gzip_writer(fileobj: IO[bytes], member_name: str) -> igzip.GzipFile:
    """A gzip stream into `fileobj` as every archive of the lake is made: igzip level 3, mtime 0,
    `member_name` (the `.jsonl`'s name) in the header."""
    return igzip.GzipFile(filename=member_name, mode="wb", fileobj=fileobj, compresslevel=COMPRESS_LEVEL, mtime=0)


class BadLocalFile(RuntimeError):
    """A local hour file whose content cannot be read (an archive that does not decompress): the
    shipper does not ship it, the archive step does not keep it."""


@dataclass(frozen=True)
class Digest:
    lines: int
    sha256: str
    size: int


def count_lines(data: bytes) -> int:
    """Newlines in `data`, a chunk at a time: between chunks the GIL is free, so scanning an hour of
    records never holds up the event loop (hashing and zlib release it by themselves)."""
    return sum(data.count(b"\n", i, i + CHUNK) for i in range(0, len(data), CHUNK))


def digest_parts(parts: Sequence[bytes]) -> Digest:
    """Digest of the concatenation of `parts` (never built)."""
    sha = hashlib.sha256()
    lines = size = 0
    for part in parts:
        sha.update(part)
        lines += count_lines(part)
        size += len(part)
    return Digest(lines, sha.hexdigest(), size)


def digest_bytes(data: bytes) -> Digest:
    return digest_parts((data,))


def same_at(data: bytes, start: int, part: bytes) -> bool:
    """data[start:start + len(part)] == part, compared a chunk at a time."""
    if start < 0 or start + len(part) > len(data):
        return False
    return all(data[start + i:start + min(i + CHUNK, len(part))] == part[i:i + CHUNK]
               for i in range(0, len(part), CHUNK))


def digest_stream(f: IO[bytes]) -> Digest:
    """sha256, newline count and size of everything readable from `f`."""
    sha = hashlib.sha256()
    lines = size = 0
    while chunk := f.read(CHUNK):
        sha.update(chunk)
        lines += chunk.count(b"\n")
        size += len(chunk)
    return Digest(lines, sha.hexdigest(), size)


def gzip_verified(parts: Sequence[bytes], member_name: str) -> tuple[bytes, Digest]:
    """The gzip of the concatenated `parts` as `l2_lake.tiers.archive` makes it (`gzip_writer`),
    decompressed again by the standard library and checked against the content's sha256 and line
    count before it is returned with that digest."""
    want = digest_parts(parts)
    buffer = io.BytesIO()
    with gzip_writer(buffer, member_name) as gz:
        for part in parts:
            view = memoryview(part)
            for i in range(0, len(part), CHUNK):
                gz.write(view[i:i + CHUNK])
    compressed = buffer.getvalue()
    with gzip.GzipFile(fileobj=io.BytesIO(compressed), mode="rb") as check:
        got = digest_stream(check)
    if got != want:
        raise BadLocalFile(f"gzip of {member_name} decompressed to {got.lines} lines sha256 {got.sha256[:16]}… "
                           f"instead of {want.lines} lines sha256 {want.sha256[:16]}…")
    return compressed, want


def unarchive(data: bytes, name: str, what: str) -> bytes:
    """The content of the archive called `name` whose bytes are `data`; BadLocalFile if it has none."""
    try:
        return content_of(data, name)
    except DamagedArchive as exc:
        raise BadLocalFile(f"{what}: {exc}") from exc


def digest_archive(path: Path, name: str | None = None) -> Digest:
    """Digest of the content of an archive (`.jsonl.gz` decompressed, the tape's `.parquet` decoded), a
    file called `name` (default: its own name); BadLocalFile if it does not decompress (decode)."""
    try:
        with open_content(path, name) as f:
            return digest_stream(f)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise BadLocalFile(f"{path} does not decompress ({type(exc).__name__}: {exc})") from exc
