"""Asset checks on `raw_hour`: six partition-aware quality checks and collector freshness.

`raw_hour_quality` (one multi-asset check, partitioned like the asset; built by
`build_hour_checks(partitions)` when the code location loads) re-reads the partition's files and
emits the verdicts of `l2_pipeline.quality.evaluate_hour`; the sensor emits the very same verdicts
as check evaluations when it registers an hour, so every closed hour has check results without a
run. `collector_freshness` is not partitioned: it looks at the open hour, and
`collector_freshness_sensor` re-evaluates it every minute.
"""

import warnings
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    MultiPartitionsDefinition,
    PreviewWarning,
    asset_check,
    multi_asset_check,
)

from l2_pipeline.hour_stats import compute_hour_stats
from l2_pipeline.hours import now_utc
from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.partitions import parse_partition_key
from l2_pipeline.quality import (
    COLLECTOR_FRESHNESS,
    DESCRIPTIONS,
    HOUR_CHECKS,
    Verdict,
    collector_freshness,
    evaluate_hour,
)
from l2_pipeline.resources import LakeResource

HOUR_CHECK_KEYS = [AssetCheckKey(RAW_HOUR, name) for name in HOUR_CHECKS]


def _severity(verdict: Verdict) -> AssetCheckSeverity:
    return AssetCheckSeverity.WARN if verdict.warn else AssetCheckSeverity.ERROR


def _fields(verdict: Verdict) -> dict[str, Any]:
    """What a check result and a runless check evaluation of one verdict have in common."""
    return {
        "asset_key": RAW_HOUR,
        "check_name": verdict.check_name,
        "passed": verdict.passed,
        "severity": _severity(verdict),
        "description": verdict.description,
        "metadata": {**verdict.metadata, "summary": MetadataValue.text(verdict.description)},
    }


def verdict_result(verdict: Verdict) -> AssetCheckResult:
    """A verdict as the result of a check executed in a run."""
    return AssetCheckResult(**_fields(verdict))


def verdict_evaluation(verdict: Verdict, partition: str | None) -> AssetCheckEvaluation:
    """A verdict as a runless check evaluation (emitted by sensors)."""
    return AssetCheckEvaluation(**_fields(verdict), partition=partition)


def build_hour_checks(partitions: MultiPartitionsDefinition) -> AssetChecksDefinition:
    """`raw_hour_quality`: the six hour checks, partitioned like `raw_hour` (`partitions`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)  # partitions_def on AssetCheckSpec is "preview" in 1.13
        specs = [AssetCheckSpec(name, asset=RAW_HOUR, description=DESCRIPTIONS[name], partitions_def=partitions)
                 for name in HOUR_CHECKS]

    @multi_asset_check(specs=specs, name="raw_hour_quality")
    def raw_hour_quality(context: AssetCheckExecutionContext, lake: LakeResource) -> Iterator[AssetCheckResult]:
        """Gaps, checksum failures, coverage, crossed books, schema and timestamps of one hour."""
        inst_id, hour = parse_partition_key(context.partition_key)
        stats = compute_hour_stats(lake.root, inst_id, hour, lake.cadence_seconds)
        for verdict in evaluate_hour(stats, lake.coverage_threshold_pct):
            yield verdict_result(verdict)

    return raw_hour_quality


@asset_check(asset=RAW_HOUR, name=COLLECTOR_FRESHNESS, description=DESCRIPTIONS[COLLECTOR_FRESHNESS])
def collector_freshness_check(lake: LakeResource) -> AssetCheckResult:
    verdict = collector_freshness(lake.root, lake.instruments, now_utc(), lake.freshness).verdict()
    return verdict_result(verdict)
