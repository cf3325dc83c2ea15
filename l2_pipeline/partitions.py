"""Partitions of every lake asset: UTC hour × instrument.

The instrument dimension is dynamic: `raw_hours_sensor` adds an instId as soon as it is configured
(`L2_INSTRUMENTS`) or has a directory in the lake, so a new instrument needs neither a code change
nor a code-location reload, and instruments dropped from the configuration keep their history.
The hour dimension starts at `L2_PARTITIONS_START` (default 2026-01-01-00:00 UTC) and, like every
hourly partitions definition, ends with the last complete hour: the open hour is not a partition.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime

from dagster import (
    DynamicPartitionsDefinition,
    HourlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

from collector.layout import validate_inst_id
from l2_pipeline.hours import floor_hour

HOUR_DIM = "hour"
INSTRUMENT_DIM = "instrument"
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"
PARTITIONS_START_ENV = "L2_PARTITIONS_START"
DEFAULT_PARTITIONS_START = "2026-01-01-00:00"


def partitions_start(environ: Mapping[str, str] | None = None) -> datetime:
    """First hour of the hour dimension, from `L2_PARTITIONS_START` (format YYYY-MM-DD-HH:MM)."""
    env = os.environ if environ is None else environ
    text = env.get(PARTITIONS_START_ENV, DEFAULT_PARTITIONS_START)
    try:
        start = datetime.strptime(text, HOUR_KEY_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(
            f"{PARTITIONS_START_ENV}={text!r} is not an hour in the format YYYY-MM-DD-HH:MM (e.g. 2026-01-01-00:00)"
        ) from None
    if start.minute:
        raise ValueError(f"{PARTITIONS_START_ENV}={text!r} must be on the hour (minutes 00)")
    return start


PARTITIONS_START = partitions_start()

instrument_partitions = DynamicPartitionsDefinition(name=INSTRUMENT_DIM)
hour_partitions = HourlyPartitionsDefinition(
    start_date=PARTITIONS_START.strftime(HOUR_KEY_FORMAT), timezone="UTC", fmt=HOUR_KEY_FORMAT
)
lake_partitions = MultiPartitionsDefinition({HOUR_DIM: hour_partitions, INSTRUMENT_DIM: instrument_partitions})


def hour_key(hour: datetime) -> str:
    """The hour dimension's key of `hour`, e.g. `2026-11-25-13:00`."""
    return floor_hour(hour).strftime(HOUR_KEY_FORMAT)


def partition_key(inst_id: str, hour: datetime) -> MultiPartitionKey:
    """The partition of one instrument-hour."""
    return MultiPartitionKey({HOUR_DIM: hour_key(hour), INSTRUMENT_DIM: validate_inst_id(inst_id)})


def parse_partition_key(key: str | MultiPartitionKey) -> tuple[str, datetime]:
    """(instId, hour) of a partition key; raises ValueError for anything else."""
    if isinstance(key, MultiPartitionKey):
        by_dim = key.keys_by_dimension
    else:
        parts = str(key).split("|")
        if len(parts) != 2:
            raise ValueError(f"partition key {key!r} is not '<hour>|<instrument>'")
        # MultiPartitionKey orders its parts by dimension name: hour, then instrument.
        by_dim = dict(zip(sorted((HOUR_DIM, INSTRUMENT_DIM)), parts, strict=True))
    try:
        hour = datetime.strptime(by_dim[HOUR_DIM], HOUR_KEY_FORMAT).replace(tzinfo=UTC)
    except (KeyError, ValueError):
        raise ValueError(f"partition key {key!r} has no hour in the format YYYY-MM-DD-HH:MM") from None
    if hour.minute:
        raise ValueError(f"partition key {key!r}: hour must be on the hour")
    return validate_inst_id(by_dim.get(INSTRUMENT_DIM, "")), hour


def is_registrable(hour: datetime) -> bool:
    """True when `hour` lies inside the hour dimension (not before `L2_PARTITIONS_START`)."""
    return hour >= PARTITIONS_START
