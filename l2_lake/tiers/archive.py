"""Verified archive of one closed instrument-hour: `{HH}.jsonl` → `{HH}.jsonl.gz` (the tape's:
`{HH}.parquet`, l2_lake.format.tape_columns).

Procedure (kill-safe at every step; the original is removed only once a verified archive is in
place under its final name):
1. lock the original (`flock`, non-blocking) so two runs never archive the same hour at once, nor
   one a live collector holds open (its writer keeps a shared lock on every open file), and
   remove stray temp files a killed run left for this hour;
2. stream-compress into `.{HH}.jsonl.gz.<random>.tmp` in the same directory, hashing the
   original (sha256, line count) on the way (the tape: its columns, proven to decode to it);
3. decompress (decode) the temp file and compare its sha256 and line count with the original's, and check
   the original did not change meanwhile (size, mtime);
4. give it the original's mtime (`stats_cache.unchanged`: archiving is no change of the hour), fsync
   it, atomic rename to `{HH}.jsonl.gz`, fsync the directory (`l2_lake.store.files.atomic_target`, which
   also removes the temp file if any step fails); then unlink `{HH}.jsonl`, fsync the directory.

If a previous run died between 4's rename and unlink, the next run finds both files, verifies the
archive against the original and only then removes the original. The open hour is refused.

A closed hour's archive is never replaced by less than it holds. When a `{HH}.jsonl` appears beside
an archive that decodes (lines that came back after the hour was archived), "differs" is not
"damaged": lines the archive already holds are just removed, and otherwise the new archive is the
archive's content followed by the lines it lacks, verified like any other. Only an archive that
does not decode is rebuilt from the original alone.

The same procedure archives an hour of the full-resolution tape (`prefix=layout.TAPE_PREFIX`:
`raw/okx/l2_tape/{instId}/{YYYY-MM-DD}/{HH}.jsonl` → `{HH}.parquet`). The collector's shipper makes
the same archives (same bytes whoever makes an hour's).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from l2_lake.format import layout, tape_columns

# the collector's shipper gzips hours the same way (same bytes whoever compresses an hour)
from l2_lake.format.digests import (
    CHUNK,
    BadLocalFile,
    Digest,
    digest_archive,
    digest_bytes,
    digest_parts,
    gzip_writer,
    same_at,
)
from l2_lake.format.hour_content import DamagedArchive, content_of
from l2_lake.format.hours import is_closed
from l2_lake.store.files import atomic_target, fsync_dir


class OpenHourError(ValueError):
    """The hour is still open (or inside the grace period): the collector may still write it."""


class ArchiveVerificationError(RuntimeError):
    """The decompressed archive differs from the original; nothing was replaced or removed."""


@dataclass(frozen=True)
class ArchiveResult:
    """What archiving one hour did. `status`: archived | already_archived (no original left; the
    archive decompresses, `lines`/`sha256` are its content's) | completed_removal | no_data | busy
    (another run, or a live collector, holds the hour's file)."""

    inst_id: str
    hour: datetime
    status: str
    archive: Path
    lines: int = 0
    sha256: str = ""
    original_bytes: int = 0
    archive_bytes: int = 0
    removed_temps: int = 0
    seconds: float = 0.0

    @property
    def changed_lake(self) -> bool:
        return self.status in ("archived", "completed_removal")

    @property
    def empty(self) -> bool:
        """The archived file held no line."""
        return self.changed_lake and not self.lines

    @property
    def warning(self) -> str | None:
        return None

    def metadata(self) -> dict[str, object]:
        ratio = self.original_bytes / self.archive_bytes if self.archive_bytes and self.original_bytes else 0.0
        return {
            "status": self.status,
            "path": str(self.archive),
            "lines": self.lines,
            "sha256": self.sha256,
            "original_bytes": self.original_bytes,
            "archive_bytes": self.archive_bytes,
            "compression_ratio": round(ratio, 3),
            "removed_temp_files": self.removed_temps,
            "seconds": round(self.seconds, 3),
        }


def temp_prefix(hour: datetime, prefix: Path = layout.RAW_PREFIX) -> str:
    """Name prefix of this hour's archive temp files (hidden, never matched by layout.parse_hour_file)."""
    return f".{hour:%H}{layout.archive_suffix(prefix)}."


def stray_temps(directory: Path, prefix: str) -> list[Path]:
    """Temp files `l2_lake.store.files.atomic_target(…, prefix)` left in `directory` (a killed run's)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp"))


def _encode_tape(src: IO[bytes], tmp: Path) -> Digest:
    """The tape hour's columns (l2_lake.format.tape_columns) into `tmp`; the digest of what they hold."""
    content = src.read()
    with open(tmp, "xb") as out:
        out.write(tape_columns.encode(content))
    return digest_parts((content,))


def _compress(src: IO[bytes], tmp: Path, member_name: str) -> Digest:
    sha = hashlib.sha256()
    lines = size = 0
    with open(tmp, "xb") as raw, gzip_writer(raw, member_name) as gz:
        while chunk := src.read(CHUNK):
            sha.update(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
            gz.write(chunk)
    return Digest(lines, sha.hexdigest(), size)


def _archived_content(final: Path) -> bytes | None:
    """The content of the archive at `final`, or None if it does not decode (damaged) or is gone."""
    try:
        return content_of(final.read_bytes(), final.name)
    except (DamagedArchive, OSError):
        return None


def archive_hour(
    data_dir: Path, inst_id: str, hour: datetime, now: datetime, grace: timedelta = timedelta(minutes=2), *,
    prefix: Path = layout.RAW_PREFIX,
) -> ArchiveResult:
    """Archive one closed hour of the dataset `prefix` (the snapshots by default; the tape's:
    `layout.TAPE_PREFIX`), idempotent. Raises OpenHourError for an open hour and
    ArchiveVerificationError if the compressed copy does not decompress to the original."""
    started = time.monotonic()
    original = layout.records_path(data_dir, inst_id, hour, prefix)
    final = layout.archive_path(data_dir, inst_id, hour, prefix)
    if not is_closed(hour, now, grace):
        raise OpenHourError(
            f"{inst_id} {hour:%Y-%m-%d %H}:00 is not closed yet (ends {hour + layout.HOUR:%H:%M} UTC + grace "
            f"{grace}); the collector may still be writing {original.name}"
        )

    def result(status: str, **kw: object) -> ArchiveResult:
        return ArchiveResult(inst_id, hour, status, final, seconds=time.monotonic() - started, **kw)  # type: ignore[arg-type]

    try:
        src = open(original, "rb")  # noqa: SIM115 - held open for the lock's lifetime
    except FileNotFoundError:
        if final.is_file():
            try:  # found archived (by an earlier run, or planted): it is the asset only if it decompresses
                found = digest_archive(final)
            except BadLocalFile as exc:
                raise ArchiveVerificationError(
                    f"{final} does not decompress ({type(exc).__name__}: {exc}); its original is gone. Restore "
                    f"the hour from a copy, or delete the archive if the hour is lost") from exc
            return result("already_archived", archive_bytes=final.stat().st_size, lines=found.lines,
                          sha256=found.sha256, original_bytes=found.size)
        return result("no_data")
    with src:
        try:
            fcntl.flock(src.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return result("busy")
        if not original.exists():  # another run finished between our open and our lock
            return result("already_archived", archive_bytes=final.stat().st_size if final.exists() else 0)
        directory = original.parent
        removed = 0
        for stray in stray_temps(directory, temp_prefix(hour, prefix)):
            stray.unlink(missing_ok=True)
            removed += 1
        before = os.fstat(src.fileno())
        source: IO[bytes] = src

        if final.is_file():
            archived = _archived_content(final)
            local = src.read()
            if archived is not None and same_at(archived, 0, local) and len(archived) == len(local):
                # a previous run was killed after the rename: the archive is the original
                digest = digest_bytes(local)
                original.unlink()
                fsync_dir(directory)
                return result("completed_removal", lines=digest.lines, sha256=digest.sha256,
                              original_bytes=digest.size, archive_bytes=final.stat().st_size,
                              removed_temps=removed)
            if archived is not None and (same_at(archived, 0, local)
                                         or same_at(archived, len(archived) - len(local), local)):
                # lines that came back after the hour was archived, all of them in it already
                original.unlink()
                fsync_dir(directory)
                return result("already_archived", archive_bytes=final.stat().st_size)
            # an archive that does not decode is damaged: rebuilt from the original; one that holds other
            # lines keeps them: the new archive is its content, then the lines it lacks (a superset)
            merged = local if archived is None or same_at(local, 0, archived) else archived + local
            source = io.BytesIO(merged)

        # fsync, rename, fsync dir; the temp file removed on failure
        with atomic_target(final, temp_prefix(hour, prefix)) as tmp:
            written = (_encode_tape(source, tmp) if prefix == layout.TAPE_PREFIX
                       else _compress(source, tmp, original.name))
            check = digest_archive(tmp, final.name)
            if check != written:
                raise ArchiveVerificationError(
                    f"{tmp.name}: decompressed {check.lines} lines sha256 {check.sha256[:16]}… but the original "
                    f"has {written.lines} lines sha256 {written.sha256[:16]}…; original kept"
                )
            after = os.stat(original)
            changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
            if changed or (source is src and after.st_size != written.size):
                raise ArchiveVerificationError(
                    f"{original} changed while it was being archived (late append?); original kept, retry later"
                )
            # the archive keeps the original's mtime: the hour's files are still the ones raw_hour
            # registered (`stats_cache.unchanged`), so a cursor reset does not register it again
            os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
        original.unlink()
        fsync_dir(directory)
        return result("archived", lines=written.lines, sha256=written.sha256, original_bytes=written.size,
                      archive_bytes=final.stat().st_size, removed_temps=removed)
