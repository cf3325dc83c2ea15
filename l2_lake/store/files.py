"""Crash-safe file primitives shared by the collector and the pipeline: directory fsync,
write-to-temp-then-rename, and the removal of leftovers past an age limit. One implementation, so
every writer of the lake gets the same guarantees."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
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


def remove_stale(paths: Iterable[Path], max_age_s: float, now_s: float) -> list[Path]:
    """Remove each of `paths` (a file, or a directory with everything in it) last modified more than
    `max_age_s` before `now_s`: leftovers of a killed step or an aside copy past its age limit. The
    removed ones; a path that vanished meanwhile is skipped."""
    removed = []
    for path in paths:
        try:
            if now_s - path.lstat().st_mtime <= max_age_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
