"""One storage interface for every home of the lake: a local directory (the lake itself, a collector's
spool, a replica's spool) or a bucket (`l2_lake.store.s3.S3Store`).

A home holds objects under keys, the layout's paths relative to the lake root (`raw/okx/l2_perps/
BTC-USDT-SWAP/2026-11-20/13.jsonl.gz`). It answers the same few questions either way:

- `list_dirs(key)`: the names directly under a "directory";
- `list(key_prefix, start_after=None)`: every object whose key starts with `key_prefix` (a key
  prefix, not only a directory), in key order, after `start_after` if given;
- `stat(key)`: one object's size, mtime, version and metadata, or None;
- `read(key)` (None if absent), `read_digest(key)`, `download(key, target)`;
- `write_verified(key, body, metadata, content_type, expect=None)`: write, read back, compare sha256;
  with `expect` a version, only if the object is still that version; with `expect=ABSENT`, only if
  there is no such object (else `Changed`, and nothing was written): a read-merge-write can then never
  overwrite what another writer put there in between;
- `delete_if_unchanged(key, version)`: delete only the version that was read (an object's ETag,
  a file's `size:mtime_ns`); False if it changed or is gone.

Keys are validated at this boundary (`validate_key`): a key given to a home, and a key a listing
returns, is a relative POSIX path with no empty, `.` or `..` segment, no backslash and no NUL. A
listed key that is not one (a foreign object such as `…/../dagster.yaml`) is skipped and counted in
`skipped_keys`, so it can never become a local path outside a work directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from l2_lake.store.files import atomic_write

READ_CHUNK = 1 << 20


class BadKey(ValueError):
    """A key that is not a relative path inside the lake."""


def validate_key(key: str) -> str:
    """`key` if it is a relative POSIX path inside the lake; BadKey saying what is wrong otherwise."""
    if not key or key.startswith("/") or "\\" in key or "\0" in key:
        raise BadKey(f"{key!r} is not a lake key: it must be a relative path with '/' separators")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise BadKey(f"{key!r} is not a lake key: it has an empty, '.' or '..' segment")
    return key


def valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except BadKey:
        return False
    return True


@dataclass(frozen=True)
class Entry:
    """One object of a home: its key, size, last-modified time (ns), version (what
    `delete_if_unchanged` compares) and user metadata (from `stat`; a listing leaves it empty)."""

    key: str
    size: int
    mtime_ns: int
    version: str
    metadata: dict[str, str] = field(default_factory=dict)


class StoreError(RuntimeError):
    """A home refused, failed or did not answer in time (the object store's errors all become one)."""


class VerifyFailed(StoreError):
    """What was written does not read back as the bytes sent."""


class Changed(StoreError):
    """A conditional write found the object another version than expected (or present when it was
    expected absent): another writer got there first, nothing was written; read again and merge."""


ABSENT = ""  # `expect` of a write that must create the object


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


class Home(Protocol):
    skipped_keys: int

    def describe(self) -> str: ...

    def url_of(self, key: str) -> str: ...

    def list_dirs(self, key: str) -> list[str]: ...

    def list(self, key_prefix: str, start_after: str | None = None) -> list[Entry]: ...

    def stat(self, key: str) -> Entry | None: ...

    def read(self, key: str) -> bytes | None: ...

    def read_digest(self, key: str) -> tuple[str, int, dict[str, str]]: ...

    def download(self, key: str, target: Path) -> None: ...

    def write_verified(self, key: str, body: bytes | Path, metadata: dict[str, str], content_type: str,
                       sha256_hex: str | None = None, expect: str | None = None) -> str: ...

    def delete_if_unchanged(self, key: str, version: str) -> bool: ...


def file_version(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


@dataclass
class LocalHome:
    """A home in a directory. Hidden names (temp files of atomic writes, `.l2-*` state) are not
    listed. Metadata is not kept on files: `stat` returns none."""

    root: Path
    skipped_keys: int = 0

    def describe(self) -> str:
        return str(self.root)

    def url_of(self, key: str) -> str:
        return str(self.root / validate_key(key))

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def list_dirs(self, key: str) -> list[str]:
        base = self.root / validate_key(key) if key.strip("/") else self.root
        try:
            return sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def list(self, key_prefix: str, start_after: str | None = None) -> list[Entry]:
        directory, _, _ = key_prefix.rpartition("/")
        base = self.root / validate_key(directory) if directory else self.root
        found = [e for e in self._walk(base, directory)
                 if e.key.startswith(key_prefix) and (start_after is None or e.key > start_after)]
        return sorted(found, key=lambda e: e.key)

    def _walk(self, base: Path, key: str) -> Iterator[Entry]:
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = f"{key}/{entry.name}" if key else entry.name
            if not valid_key(child):
                self.skipped_keys += 1
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), child)
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat()
                yield Entry(child, st.st_size, st.st_mtime_ns, file_version(st))

    def stat(self, key: str) -> Entry | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return Entry(key, st.st_size, st.st_mtime_ns, file_version(st))

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def read_digest(self, key: str) -> tuple[str, int, dict[str, str]]:
        path = self._path(key)
        return sha256_file(path), path.stat().st_size, {}

    def download(self, key: str, target: Path) -> None:
        shutil.copyfile(self._path(key), target)

    def write_verified(self, key: str, body: bytes | Path, metadata: dict[str, str], content_type: str,
                       sha256_hex: str | None = None, expect: str | None = None) -> str:
        """Write `body` atomically (temp file, fsync, rename), read it back and compare its sha256. A
        directory has no conditional rename: `expect` is checked just before the write."""
        data = body.read_bytes() if isinstance(body, Path) else body
        sha = sha256_hex or hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if expect is not None:
            current = self.stat(key)
            if (current.version if current is not None else ABSENT) != expect:
                raise Changed(f"{path} changed since it was read: nothing was written")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        if sha256_file(path) != sha:
            raise VerifyFailed(f"{path} does not read back as the {len(data)} bytes written")
        return sha

    def delete_if_unchanged(self, key: str, version: str) -> bool:
        path = self._path(key)
        try:
            if file_version(path.stat()) != version:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True
