"""One closed instrument-hour into the tiers a run asks for, from one read of its records. No Dagster.

`build_hour_tiers` stages the hour's files once (`LakeTree.hour_workspace`) and parses its records
once (`l2_lake.quality.stats_cache.read_staged_hour`: the Arrow table of its lines and the
statistics that registration and the six checks decide on). The curated Parquet is typed from that
table and the features (and the hour's figure) are computed from the curated table, so no tier
reads the hour again. An hour whose lines are not all records has no such table: the curated tier
reads it line by line (`l2_lake.tiers.curated.load_hour`) and the features tier reads what the
curated tier wrote, with the rules those tiers have for such hours.

Each tier's outcome is its result or the exception that stopped it: a tier that fails (an archive
that does not decompress, a full disk) costs the hour that tier and the tiers built from it, not its
registration, which records the error for its checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from l2_lake.quality.hour_stats import HourStats
from l2_lake.quality.stats_cache import RAW_NEEDS, HourRead, read_staged_hour
from l2_lake.store.home import StoreError
from l2_lake.store.tree import LakeTree
from l2_lake.tiers.curated import CuratedResult, curated_from_source, write_parquet
from l2_lake.tiers.features_hour import FeaturesResult, HourFigureDrawer, write_features

CURATE, FEATURES = "curate", "features"
TIER_ERRORS = (OSError, ValueError, StoreError)  # what a tier meets in the lake: a bad file, the open hour, a bucket


@dataclass(frozen=True)
class HourTiers:
    """What one read of an hour gave each tier asked for (None: not asked)."""

    read: HourRead[HourStats]
    curated: CuratedResult | Exception | None = None
    features: FeaturesResult | Exception | None = None


def build_hour_tiers(tree: LakeTree, inst_id: str, hour: datetime, now: datetime, grace: timedelta, *,
                     cadence_seconds: float, tiers: frozenset[str],
                     figure: HourFigureDrawer | None = None) -> HourTiers:
    """Read the closed hour once and build the `tiers` asked for (`CURATE`, `FEATURES`) in its workspace,
    which `tree` publishes when this returns. The read is always made: it is the registration's."""
    before = tree.fingerprint(inst_id, hour)
    with tree.hour_workspace(inst_id, hour, RAW_NEEDS) as root:
        read, src = read_staged_hour(tree, root, inst_id, hour, cadence_seconds, before)
        stats = read.stats
        table = curated_from_source(src) if src is not None and (CURATE in tiers or FEATURES in tiers) else None
        loaded = (stats.source, table, table.num_rows) if table is not None and stats and stats.source else None
        curated: CuratedResult | Exception | None = None
        features: FeaturesResult | Exception | None = None
        if CURATE in tiers:
            try:
                curated = write_parquet(root, inst_id, hour, now, grace, loaded=loaded)
            except TIER_ERRORS as exc:  # the tier's outcome (module doc)
                curated = exc
        if FEATURES in tiers:
            if isinstance(curated, Exception):
                features = curated  # no curated table to compute them from, for the same reason
            else:
                try:
                    features = write_features(root, inst_id, hour, now, grace, figure=figure,
                                              books=table if loaded is not None else None)
                except TIER_ERRORS as exc:
                    features = exc
    return HourTiers(read, curated, features)

