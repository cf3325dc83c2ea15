"""Asset keys of the code location (one place, imported by assets, checks, jobs and sensors)."""

from __future__ import annotations

from dagster import AssetKey

RAW_HOUR = AssetKey("raw_hour")
RAW_ARCHIVE = AssetKey("raw_archive")
CURATED_PARQUET = AssetKey("curated_parquet")
BOOK_FEATURES = AssetKey("book_features")
LAKE_HEALTH = AssetKey("lake_health")
INSTRUMENT_METADATA = AssetKey("instrument_metadata")
# the full-resolution tape (`l2_pipeline.assets.tape`; in the code location when the lake holds a tape)
BOOK_TAPE = AssetKey("book_tape")
BOOK_TAPE_ARCHIVE = AssetKey("book_tape_archive")
RESAMPLED_BOOKS = AssetKey("resampled_books")
