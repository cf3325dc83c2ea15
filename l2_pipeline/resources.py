"""`LakeResource`: where the lake is and every knob of the pipeline, in one ConfigurableResource.

Each field is read from `L2_<FIELD>`; the two whose collector name differs say so on the field
(`L2_CADENCE`, `L2_REST_TIMEOUT`), so the collector and the pipeline share `L2_DATA_DIR`,
`L2_INSTRUMENTS`, `L2_CADENCE`, `L2_REST_URL` and `L2_REST_TIMEOUT`.

`lake_resource_from_env()` is how `l2_pipeline.definitions` builds the resource when the code
location loads (and, with `environ`, the plain values it builds the partitions from). A Dagster
`EnvVar` has no default and resolves only when a run or a tick starts, so:
- every variable that is set is validated at load by the field's own type and constraints
  (pydantic); an invalid value stops the code location from loading with one line naming the
  variable; an unset variable leaves the field's default;
- `data_dir` and `rest_url` are then handed to Dagster as `EnvVar`s (resolved at run time; the UI
  shows the variable, not a copied value). The other fields get the validated values: Dagster 1.13
  resolves an `EnvVar` only into str, int and bool config (there is no float source), its bool
  source reads every value but false/none/0/"" as true ("off" would mean on), and an `EnvVar`
  placeholder is itself checked against the field's constraints (an `EnvVar.int` counts as 0).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field, ValidationError, field_validator, model_validator

from l2_lake.format import layout
from l2_lake.format.layout import TAPE_PREFIX, list_instruments, validate_inst_id
from l2_lake.store.s3 import parse_lake_url
from l2_lake.store.tree import LakeTree, LocalTree, lake_tree
from l2_pipeline.partitions import MAX_GROUPS, parse_hour_key

DEFAULT_INSTRUMENTS = ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]
ENV_VAR_FIELDS = ("data_dir", "rest_url")  # unconstrained strings: Dagster resolves these EnvVars itself


class LakeResource(ConfigurableResource):
    """The collector's lake on disk plus the pipeline's policy knobs. A field is read from
    `L2_<FIELD>` (upper case), or from the variable its `json_schema_extra` names."""

    data_dir: str = Field(default="./data", description="lake root (env L2_DATA_DIR); with lake_url, the local "
                          "work dir of the steps (and the collector's spool, if it runs on this host)")
    lake_url: str = Field(default="", description="s3://bucket[/prefix]: the lake's home in object storage, where "
                          "the collectors ship closed hours (env L2_LAKE_URL; AWS_* variables for the store). Empty: "
                          "the lake is data_dir")
    instruments: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INSTRUMENTS),
        description="instIds to expect (env L2_INSTRUMENTS, comma-separated): freshness, metadata, partitions",
    )
    cadence_seconds: float = Field(default=2.0, gt=0, description="collector cadence, s (env L2_CADENCE)",
                                   json_schema_extra={"env": "L2_CADENCE"})
    coverage_threshold_pct: float = Field(default=95.0, ge=0, description="coverage check passes at or above this")
    closed_grace_minutes: float = Field(default=2.0, ge=0, description="an hour is closed this long after its end")
    compress_after_hours: float = Field(default=6.0, ge=0, description="compress hours that ended this long ago")
    delete_after_days: float = Field(default=5.0, gt=0, description="delete raw hours that ended this long ago")
    curated_retention_days: float = Field(
        default=30.0, ge=0, description="delete curated Parquet this long after the hour (0 = keep forever)"
    )
    freshness_minutes: float = Field(default=5.0, gt=0, description="collector is stale after this long unwritten")
    rest_url: str = Field(default="https://www.okx.com", description="OKX REST base URL (env L2_REST_URL)")
    rest_timeout_seconds: float = Field(default=10.0, gt=0, description="REST request timeout (env L2_REST_TIMEOUT)",
                                        json_schema_extra={"env": "L2_REST_TIMEOUT"})
    sensor_max_hours_per_tick: int = Field(default=1000, ge=1, description="hours registered per sensor tick at most")
    sensor_tick_budget_seconds: float = Field(default=30.0, gt=0, description="stop registering after this long")
    curate_on_register: bool = Field(default=True, description="sensor requests curated_parquet and book_features "
                                     "for new hours")
    hour_figures: bool = Field(default=True, description="book_features and book_tape show each hour's figure in "
                               "their metadata (a ~100 KB PNG per instrument-hour in the event log)")
    health_days: int = Field(default=3, ge=1, le=31, description="days of hours the lake_health heatmap shows")
    instance_retention_days: int = Field(
        default=30, ge=1, description="instance_retention_job deletes finished runs (their events) older than this; "
        "more than health_days and delete_after_days, at least a finite curated_retention_days")
    retention_dry_run: bool = Field(default=False, description="deletion schedule only reports what it would delete")
    partitions_start: str = Field(
        default="", description="first hour partition, YYYY-MM-DD-HH:MM (read at load; empty: the lake's first hour)"
    )
    instrument_groups: int = Field(
        default=0, ge=0, le=MAX_GROUPS,
        description="partition the lake's assets by hour × instrument group instead of hour × instrument (env "
        "L2_INSTRUMENT_GROUPS): N groups `group-7-of-10`, an instrument in the group of the CRC32 of its instId "
        "modulo N. 0: one partition per instrument-hour. Keep N × 24 × instance_retention_days ≤ 3,600 (5 at 30 "
        "days) for more than 5 instruments; set it before the first registration: changing it re-keys every partition",
    )
    partitions_per_run: int = Field(
        default=0, ge=0, le=10_000,
        description="partitions a backfill or compression_schedule puts in one run of the hour assets (read at load). "
        "0: 100 instrument-hours, or 2 group-hours with instrument groups. Smaller runs spread a catch-up over more "
        "run workers (L2_EXECUTOR=celery); bigger ones cost fewer runs",
    )
    replica_dirs: str = Field(
        default="", description="redundant capture: data dirs (spools) of collectors capturing the same instruments, "
        "id=/path,id2=/path2 (ids as their --collector-id); canonical_hour merges them into data_dir. Empty: one "
        "collector writes data_dir itself (see l2_lake.tiers.replicas)",
    )

    @field_validator("instruments", mode="before")
    @classmethod
    def _split_instruments(cls, value: Any) -> Any:
        return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value

    @field_validator("instruments")
    @classmethod
    def _validate_instruments(cls, value: list[str]) -> list[str]:
        return [validate_inst_id(i) for i in value]

    @field_validator("partitions_start")
    @classmethod
    def _validate_start(cls, value: str) -> str:
        if value:
            parse_hour_key(value)
        return value

    @field_validator("replica_dirs")
    @classmethod
    def _validate_replica_dirs(cls, value: str) -> str:
        parse_replica_dirs(value)
        return value

    @field_validator("lake_url")
    @classmethod
    def _validate_lake_url(cls, value: str) -> str:
        if value:
            parse_lake_url(value)
        return value

    @model_validator(mode="after")
    def _one_kind_of_scale_out(self) -> LakeResource:
        if self.lake_url and self.replica_dirs:
            raise ValueError("L2_LAKE_URL and L2_REPLICA_DIRS cannot be combined yet: canonical_hour merges replica "
                             "spools into a local lake. Use one of them")
        return self

    @property
    def replicas(self) -> dict[str, Path]:
        """replica id → its data dir, in the configured order (the merge prefers earlier replicas); {} for none."""
        return parse_replica_dirs(self.replica_dirs)

    @property
    def root(self) -> Path:
        """The data directory as given (relative paths are relative to the process's cwd)."""
        return Path(self.data_dir).expanduser()

    @property
    def tree(self) -> LakeTree:
        """Where the lake is: object storage (`lake_url`) or the directory `data_dir`."""
        return lake_tree(self.lake_url, self.root)

    def retention_targets(self) -> list[tuple[LakeTree, timedelta | None]]:
        """What retention cleans, each with its Parquet retention: the lake (raw and Parquet tiers) and
        each replica's spool (raw hours only; they were merged into the lake long before)."""
        return [(self.tree, self.curated_retention), *((LocalTree(d), None) for d in self.replicas.values())]

    @property
    def configured_start(self) -> datetime | None:
        """The configured first hour partition (None: start at the lake's first hour)."""
        return parse_hour_key(self.partitions_start) if self.partitions_start else None

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

    def known_instruments(self) -> list[str]:
        """Configured instruments and those with a directory in the lake (snapshots or tape) or a
        replica's, sorted."""
        in_lakes = {inst for directory in self.replicas.values() for inst in list_instruments(directory)}
        tree = self.tree
        return sorted(set(self.instruments) | in_lakes | set(tree.instruments()) | set(tree.instruments(TAPE_PREFIX)))


def parse_replica_dirs(text: str) -> dict[str, Path]:
    """`id=/path,id2=/path2` → {id: Path}, order kept; ValueError saying what is wrong with the value."""
    replicas: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        replica_id, sep, path = (s.strip() for s in item.partition("="))
        if not sep or not path:
            raise ValueError(f"{item!r} is not id=/path (expected e.g. a=/srv/spool-a,b=/srv/spool-b)")
        if not layout.COLLECTOR_ID_RE.fullmatch(replica_id):
            raise ValueError(f"replica id {replica_id!r}: use the collector's --collector-id (1-32 characters a-z, "
                             f"0-9 and '-', starting with a letter or digit)")
        if replica_id in replicas:
            raise ValueError(f"replica id {replica_id!r} is given twice")
        directory = Path(path).expanduser()
        if directory in replicas.values():
            raise ValueError(f"{directory} is given for two replicas: each collector needs its own data dir")
        replicas[replica_id] = directory
    return replicas


def env_names() -> dict[str, str]:
    """resource field → its environment variable."""
    return {name: (info.json_schema_extra or {}).get("env", f"L2_{name.upper()}")  # type: ignore[union-attr]
            for name, info in LakeResource.model_fields.items()}


def lake_resource_from_env(environ: Mapping[str, str] | None = None) -> LakeResource:
    """`LakeResource` from the `L2_*` variables (unset → the field's default). Raises ValueError
    naming every invalid variable. With the process environment (`environ` None), `data_dir` and
    `rest_url` stay `EnvVar`s for Dagster to resolve."""
    env = os.environ if environ is None else environ
    names = env_names()
    given = {field: env[name] for field, name in names.items() if name in env}
    try:
        resource = LakeResource(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            problems.append(f"{names[field]}={given.get(field)!r}: {error['msg']}" if field in names
                            else error["msg"].removeprefix("Value error, "))
        raise ValueError("invalid L2_* pipeline setting: " + "; ".join(problems)) from None
    if environ is None:
        values = {field: getattr(resource, field) for field in names}
        values.update({field: EnvVar(names[field]) for field in ENV_VAR_FIELDS if field in given})
        resource = LakeResource(**values)
    return resource
