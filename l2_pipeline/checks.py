"""Asset checks on `raw_hour`: six partition-aware quality checks and collector freshness.

`raw_hour_quality` (one multi-asset check, partitioned like the asset; built by
`build_hour_checks(partitions)` when the code location loads) emits, for every hour of its step
(one partition or a range), the verdicts of `l2_lake.quality.verdicts.evaluate_hour` (for a group's
partition, `group_verdicts` of its members': one evaluation per check naming the failing instruments,
each member's outcome in its metadata):
- in every run that materializes `raw_hour` (Dagster adds an asset's checks to its runs, also to
  the sensor's registration backfill), reusing the figures the `hour_tiers` step just read;
- on their own, without touching the hour: `hour_checks_job` for chosen hours (named by tags). The checks
  can be subset (`can_subset`), so one check can run alone.

Each verdict is an `AssetCheckEvaluation` for its partition that names the hour's latest
`raw_hour` materialization as its target. That is what makes it count as the partition's current
check status everywhere Dagster shows health (the check's Partitions tab, the asset's partitions,
the lineage node, the Checks sidebar): an evaluation without a target is never current. A plain
`AssetCheckResult` cannot do this for a range: Dagster 1.13 takes its partition from the step's
single partition key (dagster/_core/definitions/asset_checks/asset_check_result.py).

`collector_freshness` is not partitioned: it looks at the open hour, and
`collector_freshness_sensor` re-evaluates it every minute.

`build_partition_checks` is that machinery for any asset that registers hours: the tape's
`book_tape_quality` (`l2_pipeline.assets.tape`) is built by it too.
"""

import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    MultiPartitionsDefinition,
    PreviewWarning,
    asset_check,
    multi_asset_check,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from l2_lake.format import layout
from l2_lake.format.hours import now_utc
from l2_lake.quality.stats_cache import read_hour
from l2_lake.quality.verdicts import (
    COLLECTOR_FRESHNESS,
    DESCRIPTIONS,
    HOUR_CHECKS,
    Verdict,
    collector_freshness,
    group_verdicts,
    hour_verdicts,
)
from l2_pipeline.group_hours import BY_INSTRUMENT, is_group, lake_has_hour, members_table, members_with_data
from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.partitions import instrument_groups, parse_partition_key
from l2_pipeline.registry import latest_materializations
from l2_pipeline.resources import LakeResource

HOUR_CHECK_KEYS = [AssetCheckKey(RAW_HOUR, name) for name in HOUR_CHECKS]


def _severity(verdict: Verdict) -> AssetCheckSeverity:
    return AssetCheckSeverity.WARN if verdict.warn else AssetCheckSeverity.ERROR


def _fields(verdict: Verdict, asset_key: AssetKey) -> dict[str, Any]:
    """What a check result and a runless check evaluation of one verdict (of a check on `asset_key`)
    have in common; a group's verdict also shows each member's outcome as a table."""
    metadata = {**verdict.metadata, "summary": MetadataValue.text(verdict.description)}
    if BY_INSTRUMENT in verdict.metadata:
        metadata["members"] = members_table(verdict.metadata[BY_INSTRUMENT], ("passed", "description"))
    return {
        "asset_key": asset_key,
        "check_name": verdict.check_name,
        "passed": verdict.passed,
        "severity": _severity(verdict),
        "description": verdict.description,
        "metadata": metadata,
    }


def verdict_result(verdict: Verdict) -> AssetCheckResult:
    """A verdict as the result of a check executed in a run."""
    return AssetCheckResult(**_fields(verdict, RAW_HOUR))


def verdict_evaluation(verdict: Verdict, partition: str | None,
                       target: AssetCheckEvaluationTargetMaterializationData | None = None,
                       asset_key: AssetKey = RAW_HOUR) -> AssetCheckEvaluation:
    """A verdict as a check evaluation (of a check on `asset_key`) of `partition`, about the
    materialization `target`."""
    return AssetCheckEvaluation(**_fields(verdict, asset_key), partition=partition, target_materialization_data=target)


def instrument_hour_verdicts(lake: LakeResource, inst_id: str, hour: datetime) -> list[Verdict]:
    """The verdicts of one instrument-hour (`quality.hour_verdicts` of its read)."""
    read = read_hour(lake.tree, inst_id, hour, lake.cadence_seconds)
    return hour_verdicts(read.stats, read.error, lake.coverage_threshold_pct)


HourVerdicts = Callable[[LakeResource, str, datetime], list[Verdict]]  # (lake, instId, hour) → its verdicts


def partition_verdicts(lake: LakeResource, key: str, verdicts: HourVerdicts, prefix: Path,
                       candidates: Sequence[str]) -> list[Verdict]:
    """The verdicts of one partition: its instrument-hour's, or its group's of the members with a file
    of the hour (`quality.group_verdicts`; none when no member has one, as no instrument-hour is
    judged before it has a file)."""
    column, hour = parse_partition_key(key)
    if not is_group(column):
        return verdicts(lake, column, hour)
    members = members_with_data(column, hour, candidates, lake_has_hour(lake.tree, prefix))
    return group_verdicts({inst_id: verdicts(lake, inst_id, hour) for inst_id in members})


def build_partition_checks(name: str, asset_key: AssetKey, check_names: Sequence[str],
                           partitions: MultiPartitionsDefinition, verdicts: HourVerdicts,
                           description: str, prefix: Path = layout.RAW_PREFIX) -> AssetChecksDefinition:
    """The multi-asset check `name`: the checks `check_names` of `asset_key`, partitioned like it
    (`partitions`), evaluated on each hour of the step from `verdicts(lake, inst_id, hour)` (a group's
    from its members' with a file under `prefix`), each evaluation targeting the hour's latest
    materialization of `asset_key` (see the module docstring)."""
    grouped = bool(instrument_groups(partitions))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)  # partitions_def on AssetCheckSpec is "preview" in 1.13
        specs = [AssetCheckSpec(check, asset=asset_key, description=DESCRIPTIONS[check], partitions_def=partitions)
                 for check in check_names]

    @multi_asset_check(specs=specs, name=name, can_subset=True, description=description)
    def hour_quality(context: AssetCheckExecutionContext, lake: LakeResource) -> Iterator[AssetCheckEvaluation]:
        selected = {key.name for key in context.selected_asset_check_keys}
        keys = list(context.op_execution_context.partition_keys)
        targets = {key: AssetCheckEvaluationTargetMaterializationData(
                       storage_id=r.storage_id, run_id=r.run_id, timestamp=r.timestamp)
                   for key, r in latest_materializations(context.instance, keys, asset_key).items()}
        candidates = lake.known_instruments() if grouped else []
        for key in keys:
            for verdict in partition_verdicts(lake, key, verdicts, prefix, candidates):
                if verdict.check_name in selected:
                    yield verdict_evaluation(verdict, key, targets.get(key), asset_key)
        context.log.info(f"evaluated {len(selected)} check(s) on {len(keys)} hour(s)")

    return hour_quality


def build_hour_checks(partitions: MultiPartitionsDefinition) -> AssetChecksDefinition:
    """`raw_hour_quality`: the six hour checks, partitioned like `raw_hour` (`partitions`)."""
    return build_partition_checks(
        "raw_hour_quality", RAW_HOUR, HOUR_CHECKS, partitions, instrument_hour_verdicts,
        "Gaps, checksum failures, coverage, crossed books, schema and timestamps of each hour of the step.")


@asset_check(asset=RAW_HOUR, name=COLLECTOR_FRESHNESS, description=DESCRIPTIONS[COLLECTOR_FRESHNESS])
def collector_freshness_check(lake: LakeResource) -> AssetCheckResult:
    verdict = collector_freshness(lake.root, lake.instruments, now_utc(), lake.freshness,
                                  replicas=list(lake.replicas.values())).verdict()
    return verdict_result(verdict)
