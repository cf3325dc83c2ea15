"""Crash-safe file primitives shared by the collector and the pipeline: directory fsync and
write-to-temp-then-rename. One implementation, so every writer of the lake gets the same guarantees."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a created, renamed or removed file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_target(path: Path, temp_prefix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, fsync it, rename it over `path`
    and fsync the directory. On any failure the temporary file is removed and `path` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{temp_prefix or f'.{path.name}.'}{secrets.token_hex(6)}.tmp"
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new content."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
