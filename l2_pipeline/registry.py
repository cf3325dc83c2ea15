"""What the Dagster instance already holds about `raw_hour` partitions (read by `raw_hours_sensor`).

Dagster stores a runless check evaluation at most once per (asset, check, partition): the
`asset_check_executions` table has a unique index on (asset_key, check_name, run_id, partition)
and every runless evaluation has run_id "". So before emitting runless evaluations the sensor
asks which partitions already have check executions: one query per hour check plus two, whatever
the number of partitions in the batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dagster import AssetRecordsFilter, DagsterInstance

from l2_pipeline.checks import HOUR_CHECK_KEYS
from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.quality import HOUR_CHECKS


@dataclass(frozen=True)
class PriorRegistration:
    """A partition that already has executions of hour checks (runless or in a run)."""

    sha256: str | None  # `sha256` metadata of its latest raw_hour materialization (None: no such value)
    checks: frozenset[str]  # the hour checks with at least one execution

    def covers(self, sha256: str) -> bool:
        """True when every hour check has an execution and the latest materialization read `sha256`."""
        return self.sha256 == sha256 and self.checks >= set(HOUR_CHECKS)


def prior_registrations(instance: DagsterInstance, partition_keys: Sequence[str]) -> dict[str, PriorRegistration]:
    """partition → what is stored, for the partitions among `partition_keys` that have any hour-check execution."""
    if not partition_keys:
        return {}
    infos = instance.event_log_storage.get_asset_check_partition_info(
        list(HOUR_CHECK_KEYS), partition_keys=list(partition_keys)
    )
    checks: dict[str, set[str]] = defaultdict(set)
    materialization_ids: dict[str, int] = {}
    for info in infos:
        if info.partition_key is None:
            continue
        checks[info.partition_key].add(info.check_key.name)
        if info.latest_materialization_storage_id is not None:
            materialization_ids[info.partition_key] = info.latest_materialization_storage_id
    sha_by_id = materialized_sha256(instance, materialization_ids.values())
    sha_by_partition = {key: sha_by_id[i] for key, i in materialization_ids.items() if i in sha_by_id}
    return {key: PriorRegistration(sha_by_partition.get(key), frozenset(names)) for key, names in checks.items()}


def materialized_sha256(instance: DagsterInstance, storage_ids: Iterable[int]) -> dict[int, str]:
    """storage id → `sha256` metadata of those raw_hour materializations (ones without it are left out)."""
    ids = sorted(set(storage_ids))
    if not ids:
        return {}
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=RAW_HOUR, storage_ids=ids), limit=len(ids))
    out: dict[int, str] = {}
    for record in records.records:
        materialization = record.asset_materialization
        sha = materialization.metadata.get("sha256") if materialization else None
        if sha is not None and isinstance(sha.value, str) and sha.value:
            out[record.storage_id] = sha.value
    return out
