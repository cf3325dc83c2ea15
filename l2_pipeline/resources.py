"""`LakeResource`: where the lake is and every knob of the pipeline, in one ConfigurableResource.

`lake_resource_from_env()` builds it from the environment with the collector's `L2_*` names where
they mean the same thing (`L2_DATA_DIR`, `L2_INSTRUMENTS`, `L2_CADENCE`, `L2_REST_URL`,
`L2_REST_TIMEOUT`) and `L2_<FIELD>` for the pipeline's own knobs. Invalid values fail at load time
with one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from collector.layout import validate_inst_id

DEFAULT_INSTRUMENTS = ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]

# resource field → environment variable (the collector's names where the meaning is shared)
ENV_NAMES: dict[str, str] = {
    "data_dir": "L2_DATA_DIR",
    "instruments": "L2_INSTRUMENTS",
    "cadence_seconds": "L2_CADENCE",
    "rest_url": "L2_REST_URL",
    "rest_timeout_seconds": "L2_REST_TIMEOUT",
    "coverage_threshold_pct": "L2_COVERAGE_THRESHOLD_PCT",
    "closed_grace_minutes": "L2_CLOSED_GRACE_MINUTES",
    "compress_after_hours": "L2_COMPRESS_AFTER_HOURS",
    "delete_after_days": "L2_DELETE_AFTER_DAYS",
    "curated_retention_days": "L2_CURATED_RETENTION_DAYS",
    "freshness_minutes": "L2_FRESHNESS_MINUTES",
    "sensor_max_hours_per_tick": "L2_SENSOR_MAX_HOURS_PER_TICK",
    "sensor_tick_budget_seconds": "L2_SENSOR_TICK_BUDGET_SECONDS",
    "curate_on_register": "L2_CURATE_ON_REGISTER",
    "retention_dry_run": "L2_RETENTION_DRY_RUN",
}


class LakeResource(ConfigurableResource):
    """The collector's lake on disk plus the pipeline's policy knobs."""

    data_dir: str = Field(default="./data", description="lake root (env L2_DATA_DIR)")
    instruments: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INSTRUMENTS),
        description="instIds to expect (env L2_INSTRUMENTS, comma-separated): freshness, metadata, partitions",
    )
    cadence_seconds: float = Field(default=2.0, gt=0, description="collector cadence, s (env L2_CADENCE)")
    coverage_threshold_pct: float = Field(default=95.0, ge=0, description="coverage check passes at or above this")
    closed_grace_minutes: float = Field(default=2.0, ge=0, description="an hour is closed this long after its end")
    compress_after_hours: float = Field(default=6.0, ge=0, description="compress hours that ended this long ago")
    delete_after_days: float = Field(default=5.0, gt=0, description="delete raw hours that ended this long ago")
    curated_retention_days: float = Field(
        default=30.0, ge=0, description="delete curated Parquet this long after the hour (0 = keep forever)"
    )
    freshness_minutes: float = Field(default=5.0, gt=0, description="collector is stale after this long unwritten")
    rest_url: str = Field(default="https://www.okx.com", description="OKX REST base URL (env L2_REST_URL)")
    rest_timeout_seconds: float = Field(default=10.0, gt=0, description="REST request timeout")
    sensor_max_hours_per_tick: int = Field(default=500, ge=1, description="hours registered per sensor tick at most")
    sensor_tick_budget_seconds: float = Field(default=30.0, gt=0, description="stop registering after this long")
    curate_on_register: bool = Field(default=True, description="sensor launches Parquet runs for new hours")
    retention_dry_run: bool = Field(default=False, description="deletion schedule only reports what it would delete")

    @property
    def root(self) -> Path:
        """The data directory as given (relative paths are relative to the process's cwd)."""
        return Path(self.data_dir).expanduser()

    @property
    def grace(self) -> timedelta:
        return timedelta(minutes=self.closed_grace_minutes)

    @property
    def compress_after(self) -> timedelta:
        return timedelta(hours=self.compress_after_hours)

    @property
    def raw_retention(self) -> timedelta:
        return timedelta(days=self.delete_after_days)

    @property
    def curated_retention(self) -> timedelta | None:
        return timedelta(days=self.curated_retention_days) if self.curated_retention_days > 0 else None

    @property
    def freshness(self) -> timedelta:
        return timedelta(minutes=self.freshness_minutes)

    def validated_instruments(self) -> list[str]:
        return [validate_inst_id(i) for i in self.instruments]


def _parse_env(field: str, text: str) -> Any:
    info = LakeResource.model_fields[field]
    annotation = info.annotation
    if field == "instruments":
        items = [s.strip() for s in text.split(",") if s.strip()]
        return [validate_inst_id(i) for i in items]
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if annotation is int:
        return int(text)
    if annotation is float:
        return float(text)
    return text


def lake_resource_from_env(environ: Mapping[str, str] | None = None) -> LakeResource:
    """`LakeResource` from `L2_*` variables (unset → default). `L2_DATA_DIR` stays an `EnvVar` in
    the running deployment so the UI shows where the value comes from."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field, name in ENV_NAMES.items():
        if name not in env:
            continue
        try:
            values[field] = _parse_env(field, env[name])
        except ValueError as exc:
            raise ValueError(f"{name}={env[name]!r}: {exc}") from None
    try:
        resource = LakeResource(**values)
    except Exception as exc:  # pydantic's message names the field; add the variable
        raise ValueError(f"invalid L2_* pipeline setting: {exc}") from None
    if environ is None and "L2_DATA_DIR" in env:
        resource = LakeResource(**{**values, "data_dir": EnvVar("L2_DATA_DIR")})
    return resource
