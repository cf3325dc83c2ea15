"""The pipeline's view of the lake by instrument-hour: a directory (`LocalTree`, the default) or a
home of the lake's storage interface (`ObjectTree` over `l2_lake.store.home.Home`: the bucket of
`L2_LAKE_URL=s3://bucket[/prefix]`, where the collectors ship closed hours: `collector.ship`). Sensors,
schedules, assets, checks and retention ask a tree the same questions either way, and the hour-level
work (statistics, archive, Parquet, features, instrument metadata) is the same code on local files
either way:

- listing: instruments, an instrument's raw hour files, a Parquet tier's hours, the first hour,
  one hour's files and their fingerprint (`name:size:mtime_ns` per file; an object's mtime is its
  Last-Modified, except for an archive the pipeline made in the bucket, whose mtime is the one its
  staged file had: the Last-Modified of the `.jsonl` it replaced, kept in its `mtime-ns` metadata as
  a local archive keeps its original's mtime, so a cursor reset finds the hour unchanged). The raw
  questions take the dataset's `prefix`: the snapshots (`layout.RAW_PREFIX`, the default) or the
  full-resolution tape (`layout.TAPE_PREFIX`: `{HH}.jsonl` and `.parquet`, no events file);
- `hour_workspace(inst_id, hour, needs)`: a directory laid out like the lake that holds the hour's
  files the step needs. For a local lake that is the lake itself. For object storage it is a
  throwaway directory under the work dir (`L2_DATA_DIR/.l2-work-*`) into which the objects are
  downloaded (mtimes set to their Last-Modified); when the step succeeds, every file it wrote or
  changed is uploaded with its sha256 and read back (`Home.write_verified`), each only over the
  version that was staged or where there was no object (`If-Match` / `If-None-Match`), and only then
  is every object whose staged copy the step removed deleted, provided it is still the object that
  was staged (`Home.delete_if_unchanged`: `If-Match` on its ETag, one request). A step that fails
  publishes nothing. The directory is removed either way.
- `where(path)`: a path as a user should see it (the object's `s3://` URL for a staged file).

Two runs working on the same hour at once in object storage are not locked against each other (S3
has no lock); the one that publishes second finds the objects changed and fails without publishing.
A step repeated on the same inputs (a retried run, a Celery task redelivered after its worker died)
is not another writer: a new file whose object already holds the same bytes (its `sha256`) counts as
published.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from l2_lake.format import layout
from l2_lake.logs import log_event
from l2_lake.store.files import remove_stale
from l2_lake.store.home import ABSENT, Changed, Entry, Home, sha256_file
from l2_lake.store.lake_walk import (
    OnUnreadable,
    ParquetHour,
    first_hour,
    hour_files,
    iter_parquet_hours,
    list_dir,
    parse_day,
    raise_unreadable,
)
from l2_lake.store.s3 import S3Store, parse_lake_url

RAW_KINDS = ("records", "archive", "events")  # the files a fingerprint names, in its order
PATH_OF: dict[str, Callable[[Path, str, datetime], Path]] = {
    "records": layout.records_path, "archive": layout.archive_path, "events": layout.events_path,
    "curated": layout.curated_path, "features": layout.features_path,
    "tape_records": layout.tape_path, "tape_archive": partial(layout.archive_path, prefix=layout.TAPE_PREFIX),
}
WORKSPACE_PREFIX = ".l2-work-"
WORKSPACE_MAX_AGE_S = 24 * 3600  # a workspace older than this is a killed step's: removed
MTIME_KEY = "mtime-ns"  # user metadata of an object a step published: the mtime its file had in the workspace
STAGED_MTIMES_KEPT = 100_000  # archives whose MTIME_KEY is remembered (a HEAD each otherwise)
CONTENT_TYPES = {".parquet": "application/vnd.apache.parquet", ".gz": "application/gzip",
                 ".jsonl": "application/x-ndjson", ".json": "application/json"}

log = logging.getLogger("l2_lake.store.tree")

Needs = Sequence[Sequence[str]]  # groups of kinds: of each group, the first that exists is staged


def hour_paths(root: Path, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX) -> dict[str, Path]:
    """kind → path of the raw files an hour of the dataset `prefix` can have, in `RAW_KINDS` order
    (the tape has no events file)."""
    paths = {"records": layout.records_path(root, inst_id, hour, prefix),
             "archive": layout.archive_path(root, inst_id, hour, prefix)}
    if prefix == layout.RAW_PREFIX:
        paths["events"] = layout.events_path(root, inst_id, hour)
    return paths


class LakeTree(Protocol):
    @property
    def key(self) -> str: ...  # names the lake in caches

    def instruments(self, prefix: Path = layout.RAW_PREFIX) -> list[str]: ...

    def subdirs(self, prefix: Path, on_unreadable: OnUnreadable = raise_unreadable) -> list[str]: ...  # sorted names

    def hour_files(self, inst_id: str, *, after: datetime | None = None, until: datetime | None = None,
                   on_unreadable: OnUnreadable = raise_unreadable, prefix: Path = layout.RAW_PREFIX
                   ) -> dict[datetime, dict[str, Path]]: ...

    def parquet_hours(self, prefix: Path, *, until: datetime | None = None,
                      on_unreadable: OnUnreadable = raise_unreadable) -> list[ParquetHour]: ...

    def first_hour(self, on_unreadable: OnUnreadable = raise_unreadable) -> datetime | None: ...

    def hour_kinds(self, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX) -> set[str]: ...

    def fingerprint(self, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX) -> str: ...

    def hour_workspace(self, inst_id: str, hour: datetime, needs: Needs) -> AbstractContextManager[Path]: ...

    def files_workspace(self, prefix: Path) -> AbstractContextManager[Path]: ...

    def where(self, path: Path) -> str: ...


def _fingerprint_part(name: str, size: int, mtime_ns: int) -> str:
    return f"{name}:{size}:{mtime_ns}"


@dataclass(frozen=True)
class LocalTree:
    """The lake in a directory: every question answered by `l2_lake.store.lake_walk` and `stat`."""

    root: Path

    @property
    def key(self) -> str:
        return str(self.root)

    def instruments(self, prefix: Path = layout.RAW_PREFIX) -> list[str]:
        return layout.list_instruments(self.root, prefix)

    def subdirs(self, prefix: Path, on_unreadable: OnUnreadable = raise_unreadable) -> list[str]:
        return [p.name for p in list_dir(self.root / prefix, on_unreadable) if p.is_dir()]

    def hour_files(self, inst_id: str, *, after: datetime | None = None, until: datetime | None = None,
                   on_unreadable: OnUnreadable = raise_unreadable, prefix: Path = layout.RAW_PREFIX
                   ) -> dict[datetime, dict[str, Path]]:
        return hour_files(self.root, inst_id, after=after, until=until, on_unreadable=on_unreadable, prefix=prefix)

    def parquet_hours(self, prefix: Path, *, until: datetime | None = None,
                      on_unreadable: OnUnreadable = raise_unreadable) -> list[ParquetHour]:
        return list(iter_parquet_hours(self.root, prefix, until=until, on_unreadable=on_unreadable))

    def first_hour(self, on_unreadable: OnUnreadable = raise_unreadable) -> datetime | None:
        return first_hour(self.root, on_unreadable)

    def hour_kinds(self, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX) -> set[str]:
        return {kind for kind, path in hour_paths(self.root, inst_id, hour, prefix).items() if path.exists()}

    def fingerprint(self, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX) -> str:
        parts = []
        for path in hour_paths(self.root, inst_id, hour, prefix).values():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            parts.append(_fingerprint_part(path.name, st.st_size, st.st_mtime_ns))
        return ";".join(parts)

    @contextmanager
    def hour_workspace(self, inst_id: str, hour: datetime, needs: Needs) -> Iterator[Path]:
        yield self.root

    @contextmanager
    def files_workspace(self, prefix: Path) -> Iterator[Path]:
        yield self.root

    def where(self, path: Path) -> str:
        return str(path)


def _posix(path: Path) -> str:
    return Path(path).as_posix()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relative path → (size, mtime_ns) of the files under `root`, hidden names (temp files) left out."""
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            st = path.stat()
            found[rel.as_posix()] = (st.st_size, st.st_mtime_ns)
    return found


@dataclass
class ObjectTree:
    """The lake's home in object storage; `work_dir` holds the steps' throwaway workspaces."""

    store: Home
    work_dir: Path
    # (key, ETag, Last-Modified) → the mtime an archive had when published (`_as_staged`), the latest ones
    staged_mtimes: OrderedDict[tuple[str, str, int], int | None] = dataclasses.field(default_factory=OrderedDict)
    foreign_keys: set[str] = dataclasses.field(default_factory=set)  # reported once each
    swept_at: float = 0.0  # when the work dir was last cleared of stale workspaces

    @property
    def key(self) -> str:
        return self.store.describe()

    def url_of(self, relative: str) -> str:
        return self.store.url_of(relative)

    def instruments(self, prefix: Path = layout.RAW_PREFIX) -> list[str]:
        return [name for name in self.subdirs(prefix) if layout.INST_ID_RE.fullmatch(name)]

    def subdirs(self, prefix: Path, on_unreadable: OnUnreadable = raise_unreadable) -> list[str]:
        return self.store.list_dirs(_posix(prefix))

    def _raw_prefix(self, inst_id: str, prefix: Path = layout.RAW_PREFIX) -> str:
        return f"{_posix(prefix)}/{layout.validate_inst_id(inst_id)}/"

    def hour_files(self, inst_id: str, *, after: datetime | None = None, until: datetime | None = None,
                   on_unreadable: OnUnreadable = raise_unreadable, prefix: Path = layout.RAW_PREFIX
                   ) -> dict[datetime, dict[str, Path]]:
        listed = self._raw_prefix(inst_id, prefix)
        # keys sort as day/HH.events.jsonl < HH.jsonl < HH.jsonl.gz < HH.parquet < HH+1…: "HH.~" is past all of hour HH
        start = f"{listed}{after:{layout.DAY_FORMAT}}/{after:%H}.~" if after is not None else None
        found: dict[datetime, dict[str, Path]] = {}
        for obj in self.store.list(listed, start_after=start):
            parsed = self._layout_hour(obj, inst_id, prefix)
            if parsed is None:
                continue
            if until is not None and parsed.hour > until:
                break  # the layout's keys sort by hour: every later one is later
            found.setdefault(parsed.hour, {})[parsed.kind] = parsed.path
        return found

    def _layout_hour(self, obj: Entry, inst_id: str, prefix: Path) -> layout.HourFile | None:
        """The hour file whose key `obj` has, if that key is exactly the layout's path of one of
        `inst_id`'s hours; None for any other key (a foreign object), reported once."""
        parsed = layout.parse_hour_file(Path(obj.key))
        if parsed is not None and parsed.inst_id == inst_id:
            expected = hour_paths(Path(""), inst_id, parsed.hour, prefix).get(parsed.kind)
            if expected is not None and expected.as_posix() == obj.key:
                return parsed
        return self._foreign(obj.key, inst_id)

    def _foreign(self, key: str, inst_id: str | None) -> None:
        """Report a key that is not the layout's (once per key); None, so callers can skip it in one line."""
        if key not in self.foreign_keys:
            self.foreign_keys.add(key)
            log_event(log, logging.WARNING, "foreign_key", inst_id,
                      f"skipped {self.url_of(key)}: not a key of the lake's layout (left as it is)", key=key)

    def parquet_hours(self, prefix: Path, *, until: datetime | None = None,
                      on_unreadable: OnUnreadable = raise_unreadable) -> list[ParquetHour]:
        found = []
        for obj in self.store.list(_posix(prefix) + "/"):
            parts = Path(obj.key).relative_to(prefix).parts
            if len(parts) != 4 or parts[3] != layout.PARQUET_FILE:
                continue
            inst_id, day_name, hour_text = (layout.parse_hive_part(parts[i], i) for i in range(3))
            day = parse_day(day_name) if day_name else None
            if inst_id is None or day is None or hour_text is None:
                continue
            hour = day.replace(hour=int(hour_text))
            if until is None or hour <= until:
                found.append(ParquetHour(inst_id, hour, Path(obj.key)))
        return sorted(found, key=lambda p: (p.inst_id, p.hour))

    def first_hour(self, on_unreadable: OnUnreadable = raise_unreadable) -> datetime | None:
        raw = [min(hours) for prefix in (layout.RAW_PREFIX, layout.TAPE_PREFIX) for inst_id in self.instruments(prefix)
               if (hours := self.hour_files(inst_id, prefix=prefix))]
        curated = self.parquet_hours(layout.CURATED_PREFIX)
        return min([*raw, *(p.hour for p in curated)], default=None)

    def _hour_objects(self, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX
                      ) -> dict[str, Entry]:
        """kind → object of the hour's raw files (of the dataset `prefix`): one LIST of the hour's key prefix."""
        listed = f"{self._raw_prefix(inst_id, prefix)}{hour:{layout.DAY_FORMAT}}/{hour:%H}."
        found = {}
        for obj in self.store.list(listed):
            parsed = self._layout_hour(obj, inst_id, prefix)
            if parsed is not None and parsed.hour == hour:
                found[parsed.kind] = obj
        return found

    def hour_kinds(self, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX) -> set[str]:
        return set(self._hour_objects(inst_id, hour, prefix))

    def fingerprint(self, inst_id: str, hour: datetime, prefix: Path = layout.RAW_PREFIX) -> str:
        objects = self._hour_objects(inst_id, hour, prefix)
        if "archive" in objects and "records" not in objects:  # what the hour is read from: its time as archived
            objects["archive"] = self._as_staged(objects["archive"])
        return ";".join(_fingerprint_part(Path(o.key).name, o.size, o.mtime_ns)
                        for kind in RAW_KINDS if (o := objects.get(kind)) is not None)

    def _as_staged(self, obj: Entry) -> Entry:
        """`obj` with the mtime its file had when a step published it (`MTIME_KEY`; one HEAD per object
        version, remembered for the latest STAGED_MTIMES_KEPT), else as listed (an object a collector
        shipped, or anything else put there)."""
        key = (obj.key, obj.version, obj.mtime_ns)
        if key not in self.staged_mtimes:
            head = self.store.stat(obj.key)
            value = (head.metadata.get(MTIME_KEY) if head is not None and head.version == obj.version else None) or ""
            self.staged_mtimes[key] = int(value) if value.isdigit() else None
            while len(self.staged_mtimes) > STAGED_MTIMES_KEPT:
                self.staged_mtimes.popitem(last=False)
        self.staged_mtimes.move_to_end(key)
        mtime = self.staged_mtimes[key]
        return obj if mtime is None else dataclasses.replace(obj, mtime_ns=mtime)

    def _listed(self, relative: str) -> Entry | None:
        return next((o for o in self.store.list(relative) if o.key == relative), None)

    @contextmanager
    def _workspace(self, objects: list[Entry]) -> Iterator[Path]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._sweep()
        workspace = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX, dir=self.work_dir))
        try:
            etags = {}
            for obj in objects:
                target = workspace / obj.key
                target.parent.mkdir(parents=True, exist_ok=True)
                self.store.download(obj.key, target)
                os.utime(target, ns=(obj.mtime_ns, obj.mtime_ns))
                etags[obj.key] = obj.version
            before = _snapshot(workspace)
            yield workspace
            self._publish(workspace, before, etags)
        finally:
            shutil.rmtree(workspace, ignore_errors=True)

    def _sweep(self) -> None:
        """At most once an hour: remove the workspaces of steps killed more than WORKSPACE_MAX_AGE_S ago
        (each holds a whole staged hour), reported."""
        now = time.time()
        if now - self.swept_at < 3600:
            return
        self.swept_at = now
        for path in remove_stale(self.work_dir.glob(WORKSPACE_PREFIX + "*"), WORKSPACE_MAX_AGE_S, now):
            log_event(log, logging.WARNING, "stale_workspace_removed", None,
                      f"removed {path}: a step's workspace left for more than {WORKSPACE_MAX_AGE_S // 3600} h "
                      "(a run was killed mid-step; nothing in it was published)", path=str(path))

    def _publish(self, workspace: Path, before: dict[str, tuple[int, int]], etags: dict[str, str]) -> None:
        """Upload what the step wrote or changed, then delete what it removed. First, every staged object
        the step changed or removed must still be the version staged: else nothing is published (a
        collector's merge landed meanwhile; the step runs again on it). The window left after that
        check is closed by conditional requests: each write replaces only the version staged (or
        creates an object only where there was none) and each delete removes only the version staged
        (`If-Match` / `If-None-Match`, one request each): an object written in between is kept, and the
        step fails naming it."""
        after = _snapshot(workspace)
        touched = sorted(r for r in etags if after.get(r) != before.get(r))
        for relative in touched:
            current = self.store.stat(relative)
            if current is not None and current.version != etags[relative]:
                raise Changed(f"{self.url_of(relative)} changed while this step worked on its staged copy "
                                 "(a collector shipped late lines?); nothing was published: run the step again")
        for relative, stamp in sorted(after.items()):
            if before.get(relative) != stamp:
                metadata = {"source": "l2_pipeline", MTIME_KEY: str(stamp[1])}
                try:
                    self.store.write_verified(relative, workspace / relative, metadata,
                                              CONTENT_TYPES.get(Path(relative).suffix, "application/octet-stream"),
                                              expect=etags.get(relative, ABSENT))
                except Changed as exc:
                    if relative not in etags and self._holds(relative, workspace / relative):
                        continue  # this step's own output, published by an earlier attempt of it
                    raise Changed(f"{self.url_of(relative)} was written by another writer while this step "
                                     "worked on its staged copy (a collector shipped late lines?); it was kept: "
                                     "run the step again") from exc
        for relative in sorted(set(before) - set(after)):  # only once everything new is verified in the store
            deleted = self.store.delete_if_unchanged(relative, etags[relative])
            if not deleted and self.store.stat(relative) is not None:
                raise Changed(f"{self.url_of(relative)} changed while this step worked on its staged copy "
                                 "(a collector shipped late lines?); it was kept: run the step again")

    def _holds(self, relative: str, path: Path) -> bool:
        """Whether the object `relative` holds exactly the bytes of `path` (its `sha256` metadata, which
        `write_verified` checked against the bytes when it wrote them)."""
        current = self.store.stat(relative)
        return current is not None and current.metadata.get("sha256") == sha256_file(path)

    @contextmanager
    def hour_workspace(self, inst_id: str, hour: datetime, needs: Needs) -> Iterator[Path]:
        raw = self._hour_objects(inst_id, hour)
        staged = []
        for group in needs:
            for kind in group:
                relative = _posix(PATH_OF[kind](Path(""), inst_id, hour))
                obj = raw.get(kind) if kind in RAW_KINDS else self._listed(relative)
                if obj is not None:
                    staged.append(obj)
                    break
        with self._workspace(staged) as workspace:
            yield workspace

    @contextmanager
    def files_workspace(self, prefix: Path) -> Iterator[Path]:
        objects = self.store.list(_posix(prefix) + "/")
        if prefix == layout.META_PREFIX:  # only the layout's names are staged; anything else is reported
            objects = [o for o in objects if layout.is_meta_key(o.key) or self._foreign(o.key, None)]
        with self._workspace(objects) as workspace:
            yield workspace

    def where(self, path: Path) -> str:
        path = Path(path)
        if not path.is_absolute():
            return self.url_of(path.as_posix())
        try:
            inside = path.relative_to(self.work_dir)
        except ValueError:
            return str(path)
        if inside.parts and inside.parts[0].startswith(WORKSPACE_PREFIX):
            return self.url_of(Path(*inside.parts[1:]).as_posix())
        return str(path)


@functools.lru_cache(maxsize=8)
def _object_tree(url: str, work_dir: str, endpoint: str) -> ObjectTree:
    return ObjectTree(S3Store(parse_lake_url(url)), Path(work_dir))


def lake_tree(lake_url: str, data_dir: Path) -> LakeTree:
    """The tree of `lake_url` (s3://…; its client made once per process and endpoint) with workspaces
    under `data_dir`, or the directory `data_dir` when `lake_url` is empty."""
    if not lake_url:
        return LocalTree(Path(data_dir))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    return _object_tree(lake_url, str(Path(data_dir).expanduser().resolve()), endpoint)


def as_tree(lake: Path | str | LakeTree) -> LakeTree:
    """A lake directory (as tests and older callers pass it) as a `LocalTree`; a tree as it is."""
    return LocalTree(Path(lake)) if isinstance(lake, (str, os.PathLike)) else lake
