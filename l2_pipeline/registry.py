"""What the Dagster instance holds about `raw_hour` partitions (and those of any other asset, e.g. the
tape's `book_tape`): each partition's latest materialization (the hour checks target it;
`raw_hours_sensor` reads the file fingerprint it recorded after a cursor reset). Two queries,
whatever the number of partitions.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, EventLogRecord

from l2_pipeline.keys import RAW_HOUR


def latest_materializations(instance: DagsterInstance, partition_keys: Sequence[str],
                            asset_key: AssetKey = RAW_HOUR) -> dict[str, EventLogRecord]:
    """partition → the record of its latest materialization of `asset_key` (`raw_hour`), for those
    of `partition_keys` that have one."""
    if not partition_keys:
        return {}
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(partition_keys))
    if not ids:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, storage_ids=sorted(ids.values())), limit=len(ids)).records
    by_id = {record.storage_id: record for record in records}
    return {key: by_id[storage_id] for key, storage_id in ids.items() if storage_id in by_id}


def stored_fingerprints(instance: DagsterInstance, partition_keys: Sequence[str],
                        asset_key: AssetKey = RAW_HOUR) -> dict[str, str]:
    """partition → the `fingerprint` its latest materialization of `asset_key` (`raw_hour`, or the
    tape's `book_tape`) recorded ("" if none)."""
    out = {}
    for key, record in latest_materializations(instance, partition_keys, asset_key).items():
        materialization = record.asset_materialization
        value = materialization.metadata.get("fingerprint") if materialization else None
        out[key] = value.value if value is not None and isinstance(value.value, str) else ""
    return out
