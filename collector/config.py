"""Collector configuration: defaults < TOML file (`--config`) < `L2_*` environment < command-line flags.

Every value is validated here, once, with a message that says what was wrong and how to fix it;
`ConfigError` makes the CLI exit with code 2 before anything starts.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from l2_lake.format import layout
from l2_lake.format.layout import InvalidInstrumentId, validate_inst_id
from l2_lake.store.s3 import parse_lake_url
from l2_lake.venues.registry import DEFAULT_VENUE


class ConfigError(ValueError):
    """Bad configuration; the message names the setting and the fix."""


@dataclass(frozen=True)
class CollectorConfig:
    data_dir: Path = Path("data")
    instruments: tuple[str, ...] = ("BTC-USDT-SWAP", "ETH-USDT-SWAP")
    cadence: float = 2.0
    depth: int = 400
    ws_url: str = DEFAULT_VENUE.ws_url
    rest_url: str = DEFAULT_VENUE.rest_url
    channels_per_connection: int = 25
    ping_after: float = 20.0
    pong_timeout: float = 10.0
    resync_timeout: float = 30.0
    status_interval: float = 30.0
    metadata_refresh_hours: float = 24.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    rest_timeout: float = 10.0
    log_level: str = "INFO"
    collector_id: str = ""  # names this collector among replicas capturing the same instruments ("" = no replicas)
    lake_url: str = ""  # s3://bucket[/prefix]: closed hours are shipped there from data_dir ("" = data_dir is the lake)
    tape: bool = False  # also write every books message to raw/okx/l2_tape (l2_lake.book.tape)

    def __post_init__(self) -> None:
        _validate(self)


FIELD_NAMES = tuple(f.name for f in fields(CollectorConfig))


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML/env/flag value into the field's type, or raise ConfigError."""
    try:
        if name == "data_dir":
            return Path(value)
        if name == "instruments":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(s.strip() for s in items if str(s).strip())
        if name == "depth" or name == "channels_per_connection":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if name in ("ws_url", "rest_url", "log_level", "collector_id"):
            return str(value)
        if name == "lake_url":
            return str(value).strip()
        if name == "tape":
            return _boolean(value)
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid value for {name}") from None


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    try:
        return _BOOLEANS[str(value).strip().lower()]
    except KeyError:
        raise ValueError(value) from None


def _validate(cfg: CollectorConfig) -> None:
    if not cfg.instruments:
        raise ConfigError("instruments: empty list; give at least one instId, e.g. BTC-USDT-SWAP")
    for inst_id in cfg.instruments:
        try:
            validate_inst_id(inst_id)
        except InvalidInstrumentId as exc:
            raise ConfigError(f"instruments: {exc}") from None
    if len(set(cfg.instruments)) != len(cfg.instruments):
        raise ConfigError("instruments: the list has duplicates")
    if not cfg.cadence > 0:
        raise ConfigError(f"cadence: {cfg.cadence} s; must be > 0 (default 2)")
    if not 1 <= cfg.depth <= layout.MAX_DEPTH:
        raise ConfigError(f"depth: {cfg.depth}; must be between 1 and {layout.MAX_DEPTH}")
    venue = DEFAULT_VENUE
    if not 1 <= cfg.channels_per_connection <= venue.max_channels_per_connection:
        raise ConfigError(f"channels_per_connection: {cfg.channels_per_connection}; {venue.name} allows at most "
                          f"{venue.max_channels_per_connection}")
    if not 0 < cfg.ping_after < venue.idle_close_s:
        raise ConfigError(f"ping_after: {cfg.ping_after} s; must be in (0, {venue.idle_close_s:g}): {venue.name} "
                          f"drops idle links at {venue.idle_close_s:g} s")
    for name in ("pong_timeout", "resync_timeout", "status_interval", "metadata_refresh_hours",
                 "backoff_initial", "rest_timeout"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{name}: {getattr(cfg, name)}; must be > 0")
    if not cfg.backoff_max >= cfg.backoff_initial:
        raise ConfigError("backoff_max must be >= backoff_initial")
    for name, schemes in (("ws_url", ("ws", "wss")), ("rest_url", ("http", "https"))):
        parsed = urlparse(getattr(cfg, name))
        if parsed.scheme not in schemes or not parsed.hostname:
            raise ConfigError(f"{name}: {getattr(cfg, name)!r} is not a {'/'.join(schemes)} URL")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level: {cfg.log_level!r}; use DEBUG, INFO, WARNING or ERROR")
    if cfg.collector_id and not layout.COLLECTOR_ID_RE.fullmatch(cfg.collector_id):
        raise ConfigError(f"collector_id: {cfg.collector_id!r}; use 1-32 characters a-z, 0-9 and '-', starting with "
                          f"a letter or digit (e.g. host-a), or leave it empty for a single collector")
    if cfg.lake_url:
        try:
            parse_lake_url(cfg.lake_url)
        except ValueError as exc:
            raise ConfigError(f"lake_url: {exc}") from None


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = raw.get("collector", raw)
    values = {k.replace("-", "_"): v for k, v in table.items()}
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {unknown}; known keys: {list(FIELD_NAMES)}")
    return values


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    return {name: environ[f"L2_{name.upper()}"] for name in FIELD_NAMES if f"L2_{name.upper()}" in environ}


def load_config(flags: Mapping[str, Any], config_file: Path | None = None,
                environ: Mapping[str, str] | None = None) -> CollectorConfig:
    """Merge defaults, TOML, environment and flags (later wins); flags set to None are absent."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(_from_toml(Path(config_file)))
    merged.update(_from_env(os.environ if environ is None else environ))
    merged.update({k: v for k, v in flags.items() if v is not None and k in FIELD_NAMES})
    return replace(CollectorConfig(), **{k: _coerce(k, v) for k, v in merged.items()})
