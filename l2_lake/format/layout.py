"""Lake layout (docs/CONTRACT.md §1): the one definition of where every file of the lake lives.

Writer (l2_lake.store.hour_files) and readers (l2_pipeline) both build and parse paths here, so the
layout cannot drift between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from l2_lake.venues.registry import DEFAULT_VENUE

INST_ID_RE = re.compile(DEFAULT_VENUE.inst_id_pattern)
RAW_PREFIX = Path("raw", DEFAULT_VENUE.name, DEFAULT_VENUE.dataset)
# the full-resolution tape (`--tape`, l2_lake.book.tape): every books message, hour files laid out as
# the snapshots' (`{instId}/{YYYY-MM-DD}/{HH}.jsonl`), archived as `{HH}.parquet` (l2_lake.format.tape_columns)
TAPE_PREFIX = Path("raw", DEFAULT_VENUE.name, "l2_tape")
META_PREFIX = Path("meta", DEFAULT_VENUE.name, "instruments")
CURATED_PREFIX = Path("curated", DEFAULT_VENUE.name, DEFAULT_VENUE.dataset)
FEATURES_PREFIX = Path("features", DEFAULT_VENUE.name, DEFAULT_VENUE.dataset)
# Parquet tiers are hive-partitioned (`instId=…/date=…/hour=…/`) so that DuckDB, polars and
# pyarrow.dataset read them as one table with instId, date and hour as columns. `hour` is not
# zero-padded: DuckDB types a partition value like "05" as text, "5" as an integer.
PARQUET_FILE = "data.parquet"
_HIVE_PARTS = (
    re.compile(r"instId=(.+)"),
    re.compile(r"date=([0-9]{4}-[0-9]{2}-[0-9]{2})"),
    re.compile(r"hour=(1?[0-9]|2[0-3])"),  # ASCII digits: \d would also take other scripts' digits
)

RECORDS_SUFFIX = ".jsonl"
EVENTS_SUFFIX = ".events.jsonl"
ARCHIVE_SUFFIX = ".jsonl.gz"
TAPE_ARCHIVE_SUFFIX = ".parquet"  # the tape's archive: columns that decode to the hour's exact bytes

COLLECTOR_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")  # a replica's name (`--collector-id`, L2_REPLICA_DIRS)
MAX_DEPTH = 400  # levels per side of the `books` channel, and of any record
HOUR = timedelta(hours=1)
HOUR_MS = 3_600_000  # the same, in epoch milliseconds
DAY_FORMAT = "%Y-%m-%d"  # the day directories
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOUR_FILE_RE = re.compile(r"^(\d{2})(\.jsonl\.gz|\.events\.jsonl|\.jsonl|\.parquet)$")


class InvalidInstrumentId(ValueError):
    """An instrument id that must not become a path component."""


def validate_inst_id(inst_id: str) -> str:
    """Return `inst_id` unchanged if it is a well-formed OKX instId, else raise with a clear reason."""
    if not isinstance(inst_id, str) or not INST_ID_RE.fullmatch(inst_id):
        raise InvalidInstrumentId(
            f"invalid instrument id {inst_id!r}: expected upper-case OKX instId like BTC-USDT-SWAP "
            f"(pattern {INST_ID_RE.pattern})"
        )
    return inst_id


def hour_floor(ts_ms: int) -> datetime:
    """The UTC hour containing epoch-milliseconds `ts_ms`."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return dt.replace(minute=0, second=0, microsecond=0)


def _check_hour(hour: datetime) -> datetime:
    if hour.tzinfo is None or hour.utcoffset() != timedelta(0):
        raise ValueError(f"hour must be timezone-aware UTC, got {hour!r}")
    if hour.minute or hour.second or hour.microsecond:
        raise ValueError(f"hour must be on the hour, got {hour.isoformat()}")
    return hour


def raw_root(data_dir: Path, prefix: Path = RAW_PREFIX) -> Path:
    """The raw dataset's root: the snapshots (`raw/okx/l2_perps`), or with `prefix` the tape's."""
    return Path(data_dir) / prefix


def hour_dir(data_dir: Path, inst_id: str, hour: datetime, prefix: Path = RAW_PREFIX) -> Path:
    _check_hour(hour)
    return raw_root(data_dir, prefix) / validate_inst_id(inst_id) / hour.strftime(DAY_FORMAT)


def records_path(data_dir: Path, inst_id: str, hour: datetime, prefix: Path = RAW_PREFIX) -> Path:
    """`raw/okx/l2_perps/{instId}/{YYYY-MM-DD}/{HH}.jsonl` (with `prefix`, that dataset's)."""
    return hour_dir(data_dir, inst_id, hour, prefix) / f"{hour:%H}{RECORDS_SUFFIX}"


def tape_path(data_dir: Path, inst_id: str, hour: datetime) -> Path:
    """`raw/okx/l2_tape/{instId}/{YYYY-MM-DD}/{HH}.jsonl`: the hour's tape."""
    return records_path(data_dir, inst_id, hour, TAPE_PREFIX)


def events_path(data_dir: Path, inst_id: str, hour: datetime) -> Path:
    """`raw/okx/l2_perps/{instId}/{YYYY-MM-DD}/{HH}.events.jsonl`."""
    return hour_dir(data_dir, inst_id, hour) / f"{hour:%H}{EVENTS_SUFFIX}"


def archive_suffix(prefix: Path = RAW_PREFIX) -> str:
    """How the dataset `prefix` archives a closed hour: the snapshots gzip, the tape Parquet."""
    return TAPE_ARCHIVE_SUFFIX if prefix == TAPE_PREFIX else ARCHIVE_SUFFIX


def is_tape_archive(path: Path | str) -> bool:
    """Whether a raw hour file's name is the tape's archive, `{HH}.parquet`."""
    return str(path).endswith(TAPE_ARCHIVE_SUFFIX)


def is_archive(path: Path | str) -> bool:
    """Whether a raw hour file's name is an archive (either dataset's)."""
    return str(path).endswith((ARCHIVE_SUFFIX, TAPE_ARCHIVE_SUFFIX))


def archive_path(data_dir: Path, inst_id: str, hour: datetime, prefix: Path = RAW_PREFIX) -> Path:
    """`raw/okx/l2_perps/{instId}/{YYYY-MM-DD}/{HH}.jsonl.gz`; with `prefix`, that dataset's
    (the tape's: `raw/okx/l2_tape/…/{HH}.parquet`)."""
    return hour_dir(data_dir, inst_id, hour, prefix) / f"{hour:%H}{archive_suffix(prefix)}"


def meta_path(data_dir: Path, inst_id: str) -> Path:
    """Latest REST instrument object: `meta/okx/instruments/{instId}.json`."""
    return Path(data_dir) / META_PREFIX / f"{validate_inst_id(inst_id)}.json"


def meta_history_path(data_dir: Path, inst_id: str) -> Path:
    """Every distinct version of the instrument object, one JSON per line, oldest first."""
    return Path(data_dir) / META_PREFIX / f"{validate_inst_id(inst_id)}.history.jsonl"


def is_meta_key(key: str) -> bool:
    """Whether `key` is exactly the layout's path of an instrument's metadata file (either one)."""
    directory, _, name = key.rpartition("/")
    inst_id = name.removesuffix(".history.jsonl") if name.endswith(".jsonl") else name.removesuffix(".json")
    return directory == META_PREFIX.as_posix() and inst_id != name and INST_ID_RE.fullmatch(inst_id) is not None


def hive_hour_dir(data_dir: Path, prefix: Path, inst_id: str, hour: datetime) -> Path:
    """`{prefix}/instId={instId}/date={YYYY-MM-DD}/hour={H}` of a Parquet tier."""
    _check_hour(hour)
    return (
        Path(data_dir) / prefix / f"instId={validate_inst_id(inst_id)}" / f"date={hour.strftime(DAY_FORMAT)}"
        / f"hour={hour.hour}"
    )


def curated_path(data_dir: Path, inst_id: str, hour: datetime) -> Path:
    """Analysis-ready Parquet of one instrument-hour."""
    return hive_hour_dir(data_dir, CURATED_PREFIX, inst_id, hour) / PARQUET_FILE


def features_path(data_dir: Path, inst_id: str, hour: datetime) -> Path:
    """Liquidity features of one instrument-hour (one row per snapshot record)."""
    return hive_hour_dir(data_dir, FEATURES_PREFIX, inst_id, hour) / PARQUET_FILE


def legacy_curated_path(data_dir: Path, inst_id: str, hour: datetime) -> Path:
    """Where curated Parquet lived before the hive layout (`{instId}/{YYYY-MM-DD}/{HH}.parquet`);
    only the retention job's migration still looks here."""
    _check_hour(hour)
    return (
        Path(data_dir) / CURATED_PREFIX / validate_inst_id(inst_id) / hour.strftime(DAY_FORMAT)
        / f"{hour:%H}.parquet"
    )


def parse_hive_part(name: str, level: int) -> str | None:
    """The value of a hive directory name at `level` (0 instId, 1 date, 2 hour); None if it is not one."""
    m = _HIVE_PARTS[level].fullmatch(name)
    if m is None or (level == 0 and not INST_ID_RE.fullmatch(m.group(1))):
        return None
    return m.group(1)


@dataclass(frozen=True, slots=True)
class HourFile:
    """One file of the raw lake, identified by what its path says."""

    inst_id: str
    hour: datetime
    kind: str  # "records" | "events" | "archive"
    path: Path


_KIND_BY_SUFFIX = {RECORDS_SUFFIX: "records", EVENTS_SUFFIX: "events", ARCHIVE_SUFFIX: "archive",
                   TAPE_ARCHIVE_SUFFIX: "archive"}


def in_tape(hour_file: Path) -> bool:
    """Whether a raw hour file's path (`…/{dataset}/{instId}/{YYYY-MM-DD}/{name}`) is in the tape's dataset."""
    return hour_file.parent.parent.parent.name == TAPE_PREFIX.name


def archive_of(records: Path) -> Path:
    """Where the `{HH}.jsonl` at `records` (of either dataset) is archived."""
    suffix = TAPE_ARCHIVE_SUFFIX if in_tape(records) else ARCHIVE_SUFFIX
    return records.with_name(records.name.removesuffix(RECORDS_SUFFIX) + suffix)


def parse_hour_file(path: Path) -> HourFile | None:
    """Decode a raw-lake path back into (instId, hour, kind); None for anything else."""
    path = Path(path)
    m = _HOUR_FILE_RE.fullmatch(path.name)
    date_name, inst_id = path.parent.name, path.parent.parent.name
    if not m or not _DATE_RE.fullmatch(date_name) or not INST_ID_RE.fullmatch(inst_id):
        return None
    if m.group(2) == TAPE_ARCHIVE_SUFFIX and not in_tape(path):
        return None  # only the tape is archived as Parquet
    try:
        hour = datetime.strptime(f"{date_name} {m.group(1)}", f"{DAY_FORMAT} %H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return HourFile(inst_id, hour, _KIND_BY_SUFFIX[m.group(2)], path)


def list_instruments(data_dir: Path, prefix: Path = RAW_PREFIX) -> list[str]:
    """instIds that have a directory in the raw lake (with `prefix`, that dataset), sorted."""
    root = raw_root(data_dir, prefix)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and INST_ID_RE.fullmatch(p.name))
