"""What the Dagster instance holds about `raw_hour` partitions (and those of any other asset, e.g. the
tape's `book_tape`): each partition's latest materialization (the hour checks target it;
`raw_hours_sensor` reads the file fingerprint it recorded after a cursor reset). Two queries,
whatever the number of partitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, EventLogRecord

from l2_pipeline.group_hours import recorded_members
from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.partitions import parse_partition_key

FETCH_LIMIT = 10_000  # records Dagster returns at most per fetch (1.13 refuses a larger limit)


def latest_materializations(instance: DagsterInstance, partition_keys: Sequence[str],
                            asset_key: AssetKey = RAW_HOUR, batch: int = FETCH_LIMIT) -> dict[str, EventLogRecord]:
    """partition → the record of its latest materialization of `asset_key` (`raw_hour`), for those
    of `partition_keys` that have one; fetched `batch` records at a time (a 3-day heatmap of 250
    instruments is 18,000 cells)."""
    if not partition_keys:
        return {}
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(partition_keys))
    wanted = sorted(ids.values())
    by_id: dict[int, EventLogRecord] = {}
    for start in range(0, len(wanted), batch):
        chunk = wanted[start:start + batch]
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, storage_ids=chunk), limit=len(chunk)).records
        by_id.update((record.storage_id, record) for record in records)
    return {key: by_id[storage_id] for key, storage_id in ids.items() if storage_id in by_id}


def stored_fingerprints(instance: DagsterInstance, partition_keys: Sequence[str], asset_key: AssetKey = RAW_HOUR,
                        name: str = "fingerprint") -> dict[str, dict[str, str]]:
    """partition → instId → the file fingerprint (metadata `name`) its latest materialization of
    `asset_key` (`raw_hour`, the tape's `book_tape`, `canonical_hour`'s `replica_fingerprint`) recorded
    of that instrument's hour ("" if none): one instrument for an instrument's partition, each member
    the materialization included for a group's."""
    out = {}
    for key, record in latest_materializations(instance, partition_keys, asset_key).items():
        materialization = record.asset_materialization
        metadata = materialization.metadata if materialization else {}
        column, _ = parse_partition_key(key)
        out[key] = {inst_id: _text(member.get(name)) for inst_id, member in recorded_members(metadata, column).items()}
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
