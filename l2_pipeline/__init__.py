"""okx-l2 pipeline: the Dagster code location over the collector's lake (`l2_pipeline.definitions`).

Pure modules (no Dagster): hours, hour_stats, quality, selection, archive, curated, retention,
instruments. Dagster modules: partitions, resources, keys, assets, checks, jobs, registry, sensors,
schedules, definitions. `python -m bench.lake` times sensor and compression ticks.
"""
