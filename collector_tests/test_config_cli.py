"""Configuration precedence and validation, and the CLI's exit code 2 with one clear line."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.app import shard
from collector.config import CollectorConfig, ConfigError, load_config
from collector.feed import ConnectionPacer


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[collector]\ncadence = 5\ndepth = 50\ninstruments = ["SOL-USDT-SWAP"]\n')
    cfg = load_config({"depth": "20"}, toml, environ={"L2_CADENCE": "3", "L2_DATA_DIR": "/x"})
    assert cfg == CollectorConfig(cadence=3.0, depth=20, instruments=("SOL-USDT-SWAP",), data_dir=Path("/x"))
    assert load_config({}, environ={}) == CollectorConfig()


@pytest.mark.parametrize(("flags", "message"), [
    ({"cadence": "0"}, "cadence: 0.0 s; must be > 0"),
    ({"cadence": "-1"}, "must be > 0"),
    ({"cadence": "abc"}, "cadence: 'abc' is not a valid value"),
    ({"depth": "401"}, "depth: 401; must be between 1 and 400"),
    ({"instruments": "../x"}, "invalid instrument id '../x'"),
    ({"instruments": "btc-usdt-swap"}, "invalid instrument id"),
    ({"instruments": "A-B,A-B"}, "duplicates"),
    ({"instruments": ""}, "empty list"),
    ({"ws_url": "https://ws.okx.com"}, "not a ws/wss URL"),
    ({"ping_after": "30"}, "must be in (0, 30)"),
    ({"channels_per_connection": "31"}, "at most 30"),
])
def test_bad_values_are_rejected_with_the_setting_named(flags: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_config(flags, environ={})
    assert message in str(info.value)


def test_toml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("cadence = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, bad, environ={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("cadense = 2\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['cadense'\]"):
        load_config({}, unknown, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, tmp_path / "missing.toml", environ={})


def test_sharding_respects_channel_limit() -> None:
    insts = tuple(f"I{i}-USDT-SWAP" for i in range(61))
    groups = shard(insts, 30)
    assert [len(g) for g in groups] == [30, 30, 1] and sum(groups, ()) == insts


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, check=False)


@pytest.mark.parametrize(("args", "needle"), [
    (["run", "--cadence", "0"], "cadence"),
    (["run", "--instruments", "../etc"], "invalid instrument id '../etc'"),
    (["run", "--depth", "0"], "depth"),
    (["replay", "--input", "missing.jsonl", "--data-dir", "d"], "is not a file"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_unwritable_data_dir_exits_2(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    result = _cli("run", "--data-dir", str(tmp_path / "afile" / "lake"), "--ws-url", "ws://127.0.0.1:9/ws",
                  "--rest-url", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2 and "data_dir: cannot write" in result.stderr


def test_connection_pacer_keeps_under_three_per_second() -> None:
    async def seven_connects() -> list[float]:
        pacer, stamps = ConnectionPacer(3.0), []
        for _ in range(7):
            await pacer.wait_turn()
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(seven_connects())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 1 / 3 - 0.01 and stamps[-1] - stamps[0] >= 2.0 - 0.05
