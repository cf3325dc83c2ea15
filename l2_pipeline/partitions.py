"""Partitions of every lake asset: UTC hour × instrument (or instrument group), and how many runs a set
of them takes.

The second dimension (named `instrument`) holds one of two kinds of key, fixed by `L2_INSTRUMENT_GROUPS`:
- 0 (the default): one key per instrument, its instId. An instrument-hour is a partition.
- N > 0: N group keys `group-7-of-10` (the index zero-padded to the width of N - 1: `group-07-of-12`),
  each holding the instruments whose CRC32 of the instId is 7 modulo 10 (`group_key`). A group-hour is
  a partition: its steps do the hour of every instrument of the group that has a file of it
  (`group_members`), and its checks judge them all. The membership depends only on the instId and N,
  so it never changes as instruments come and go; an instrument that appears later joins its group
  without a reload. Dagster's `raw_hour` page stays within 2 s up to
  about 3,600 checked partitions per check (docs/PERFORMANCE.md): 5 instruments over a 30-day instance
  window, or 5 groups of any size (250 instruments in groups of ~50).

Both dimensions are fixed when the code location loads (`l2_pipeline.definitions`), so every
command works on a new Dagster instance (nothing has to tick first):
- instruments: the configured ones (`L2_INSTRUMENTS`) and every instrument with a directory in the
  lake. Instruments dropped from the configuration keep their history. An instrument that appears
  later becomes a partition when the code location is reloaded (the sensor says so in its log).
- hours: from `L2_PARTITIONS_START` if set, else from the lake's first hour (raw or curated; the
  current day on an empty lake), so a young lake shows as filled, not as 99 % missing. Like every
  hourly partitions definition it ends with the last complete hour: the open hour is not a partition.

Sensors and schedules are built from the same `MultiPartitionsDefinition` (`hours_start`,
`instrument_keys`), so "is this hour a partition?" always has one answer.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from dagster import (
    HourlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from l2_lake.format.hours import utc
from l2_lake.format.layout import hour_floor, validate_inst_id

HOUR_DIM = "hour"
INSTRUMENT_DIM = "instrument"
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"
GROUP_KEY_RE = re.compile(r"group-(\d+)-of-(\d+)")
MAX_GROUPS = 1000


def group_key(inst_id: str, groups: int) -> str:
    """The key of the group of `groups` that holds `inst_id`, e.g. `group-7-of-10`."""
    return _group_name(_group_index(validate_inst_id(inst_id), groups), groups)


def _group_index(inst_id: str, groups: int) -> int:
    """The membership rule: the group of an instrument is the CRC32 of its instId modulo `groups`."""
    return zlib.crc32(inst_id.encode()) % groups


def _group_name(index: int, groups: int) -> str:
    return f"group-{index:0{len(str(groups - 1))}d}-of-{groups}"


def group_keys(groups: int) -> list[str]:
    """Every group key of `groups` groups, in order (also the empty ones: the keys never change)."""
    if not 0 < groups <= MAX_GROUPS:
        raise ValueError(f"instrument groups must be 1 to {MAX_GROUPS}, not {groups}")
    return [_group_name(i, groups) for i in range(groups)]


def parse_group_key(text: str) -> tuple[int, int] | None:
    """(index, groups) of a group key; None for anything else (an instId)."""
    match = GROUP_KEY_RE.fullmatch(text)
    if match is None:
        return None
    index, groups = int(match[1]), int(match[2])
    return (index, groups) if index < groups and text == _group_name(index, groups) else None


def group_members(column: str, candidates: Iterable[str]) -> list[str]:
    """The instruments of `candidates` a key of the instrument dimension stands for: those of the group
    (sorted), or the instrument itself (whether or not among the candidates)."""
    group = parse_group_key(column)
    if group is None:
        return [validate_inst_id(column)]
    index, groups = group
    return sorted(i for i in set(candidates) if _group_index(i, groups) == index)


def parse_hour_key(text: str) -> datetime:
    """An hour key (`YYYY-MM-DD-HH:MM`, minutes 00) as aware UTC; ValueError for anything else."""
    try:
        hour = datetime.strptime(text, HOUR_KEY_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not an hour in the format YYYY-MM-DD-HH:MM (e.g. 2026-01-01-00:00)") from None
    if hour.minute:
        raise ValueError(f"{text!r} is not on the hour (minutes must be 00)")
    return hour


def lake_partitions(start: datetime, instruments: Sequence[str], groups: int = 0) -> MultiPartitionsDefinition:
    """The partitions of the lake assets: hours from `start` on × `instruments` (`groups` 0), or × the
    `groups` instrument groups."""
    if not instruments and not groups:
        raise ValueError("no instrument: set L2_INSTRUMENTS (e.g. BTC-USDT-SWAP,ETH-USDT-SWAP) or point "
                         "L2_DATA_DIR at a lake that has instrument directories")
    hours = HourlyPartitionsDefinition(start_date=hour_key(start), timezone="UTC", fmt=HOUR_KEY_FORMAT)
    names = StaticPartitionsDefinition(group_keys(groups) if groups else sorted({validate_inst_id(i)
                                                                                   for i in instruments}))
    return MultiPartitionsDefinition({HOUR_DIM: hours, INSTRUMENT_DIM: names})


def instrument_groups(partitions: MultiPartitionsDefinition) -> int:
    """The number of instrument groups of `partitions` (0: one key per instrument)."""
    first = next(iter(instrument_keys(partitions)), "")
    group = parse_group_key(first)
    return group[1] if group else 0


def hours_start(partitions: MultiPartitionsDefinition) -> datetime:
    """The first hour of the hour dimension."""
    hours = partitions.get_partitions_def_for_dimension(HOUR_DIM)
    assert isinstance(hours, HourlyPartitionsDefinition)
    return utc(hours.start)


def instrument_keys(partitions: MultiPartitionsDefinition) -> list[str]:
    """The instrument dimension's keys (instIds or group keys), in its order."""
    return list(partitions.get_partitions_def_for_dimension(INSTRUMENT_DIM).get_partition_keys())


def hour_key(hour: datetime) -> str:
    """The hour dimension's key of `hour`, e.g. `2026-11-25-13:00`."""
    return hour_floor(int(utc(hour).timestamp() * 1000)).strftime(HOUR_KEY_FORMAT)


def partition_key(inst_id: str, hour: datetime, groups: int = 0) -> MultiPartitionKey:
    """The partition that holds one instrument-hour (its group's hour when `groups`)."""
    column = group_key(inst_id, groups) if groups else validate_inst_id(inst_id)
    return MultiPartitionKey({HOUR_DIM: hour_key(hour), INSTRUMENT_DIM: column})


def parse_partition_key(key: str | MultiPartitionKey) -> tuple[str, datetime]:
    """(instId or group key, hour) of a partition key; raises ValueError for anything else."""
    if isinstance(key, MultiPartitionKey):
        by_dim = key.keys_by_dimension
    else:
        parts = str(key).split("|")
        if len(parts) != 2:
            raise ValueError(f"partition key {key!r} is not '<hour>|<instrument>'")
        # MultiPartitionKey orders its parts by dimension name: hour, then instrument.
        by_dim = dict(zip(sorted((HOUR_DIM, INSTRUMENT_DIM)), parts, strict=True))
    try:
        hour = parse_hour_key(by_dim[HOUR_DIM])
    except (KeyError, ValueError):
        raise ValueError(f"partition key {key!r} has no hour in the format YYYY-MM-DD-HH:MM") from None
    column = by_dim.get(INSTRUMENT_DIM, "")
    return (column if parse_group_key(column) else validate_inst_id(column)), hour


def run_batches(keys: Iterable[str], max_per_run: int, instrument_order: Sequence[str]) -> list[list[str]]:
    """The partitions of each run an asset backfill with `BackfillPolicy.multi_run(max_per_run)`
    makes of `keys`, split the way Dagster 1.13 splits a subset of a multi-partitions definition
    (`DefaultPartitionsSubset.get_partition_key_ranges`): group by the dimension with fewer distinct
    keys among `keys` (the hour on a tie), make ranges of consecutive keys of the other dimension
    (consecutive hours; instruments or groups consecutive in the instrument dimension's order,
    `instrument_order`), then cut each range into chunks of at most `max_per_run`. A batch is exactly
    the partition range from its first key to its last. Dagster gets there by listing every hour
    since the partitions start for each group (seconds for a 5-day catch-up of 20 instruments);
    this does the same from `keys` alone. Raises ValueError for an instrument not in the order."""
    position = {inst_id: i for i, inst_id in enumerate(instrument_order)}
    parsed = sorted({parse_partition_key(k) for k in keys})
    unknown = {inst_id for inst_id, _ in parsed} - set(position)
    if unknown:
        raise ValueError(f"not in the instrument dimension: {', '.join(sorted(unknown))}")
    hours = {hour for _, hour in parsed}
    by_hour = len(hours) <= len({inst_id for inst_id, _ in parsed})
    groups: dict[object, list[tuple[int, str]]] = defaultdict(list)  # group → (position along the range, key)
    for inst_id, hour in parsed:
        key = str(MultiPartitionKey({HOUR_DIM: hour_key(hour), INSTRUMENT_DIM: inst_id}))
        if by_hour:
            groups[hour].append((position[inst_id], key))
        else:
            groups[inst_id].append((int(hour.timestamp()) // 3600, key))
    batches: list[list[str]] = []
    for members in groups.values():
        members.sort()
        run: list[str] = []
        for i, (at, key) in enumerate(members):
            if run and (len(run) == max_per_run or at != members[i - 1][0] + 1):
                batches.append(run)
                run = []
            run.append(key)
        batches.append(run)
    return sorted(batches)
