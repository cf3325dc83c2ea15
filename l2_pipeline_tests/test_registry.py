"""`latest_materializations` on a real instance: the latest record of each partition, fetched in
batches (Dagster returns at most 10,000 records a fetch; a 3-day heatmap of 250 instruments needs 18,000)."""

from __future__ import annotations

from dagster import AssetMaterialization

from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline.registry import latest_materializations
from l2_pipeline_tests.lake_factory import BTC, ETH, hour_at


def test_latest_materializations_come_in_batches_and_are_the_latest(instance):
    keys = [str(partition_key(inst, hour_at(h))) for inst in (BTC, ETH) for h in range(4)]
    for n, key in enumerate(keys):
        instance.report_runless_asset_event(AssetMaterialization(RAW_HOUR, partition=key, metadata={"n": n}))
    instance.report_runless_asset_event(AssetMaterialization(RAW_HOUR, partition=keys[0], metadata={"n": 100}))
    wanted = [*keys, str(partition_key(BTC, hour_at(9)))]  # one without a materialization
    for batch in (3, 10_000):
        found = latest_materializations(instance, wanted, batch=batch)
        assert set(found) == set(keys)
        numbers = {key: record.asset_materialization.metadata["n"].value for key, record in found.items()}
        assert numbers == {key: 100 if key == keys[0] else n for n, key in enumerate(keys)}
