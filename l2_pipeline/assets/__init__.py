"""The pipeline's assets by group: `lake` (the raw hours, their archive, curated Parquet, features,
instrument metadata), `tape` (the full-resolution tape's hours, archive and resampled books),
`replicas` (several collectors' spools merged into the canonical lake), `dashboards` (lake health).
"""
