"""Asset keys of the code location (one place, imported by assets, checks, jobs and sensors)."""

from __future__ import annotations

from dagster import AssetKey

RAW_HOUR = AssetKey("raw_hour")
RAW_ARCHIVE = AssetKey("raw_archive")
CURATED_PARQUET = AssetKey("curated_parquet")
BOOK_FEATURES = AssetKey("book_features")
LAKE_HEALTH = AssetKey("lake_health")
INSTRUMENT_METADATA = AssetKey("instrument_metadata")
