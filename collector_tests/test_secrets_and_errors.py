"""Secrets never leave the process, and the offline commands end on bad input with one line
(issue: lake integrity, items 7 and 8): a password in AWS_ENDPOINT_URL is redacted in errors, logs
and the CLI's message; env files that may hold AWS_* keys are installed 0600; `export`, `replay
--tape` and `plot --tape` on a damaged archive or an unreachable store exit non-zero without a
traceback."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from l2_lake.logs import LogfmtFormatter, redact
from l2_lake.store.home import StoreError
from l2_lake.store.s3 import LakeUrl, S3Store

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55"
BTC = "BTC-USDT-SWAP"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leaky_endpoint() -> str:
    return f"http://AKIAEXAMPLE:{SECRET}@127.0.0.1:{closed_port()}"


def test_redact_hides_only_the_password() -> None:
    assert redact(f"GET http://user:{SECRET}@host:9000/b failed") == "GET http://user:***@host:9000/b failed"
    assert redact("s3://bucket/prefix and http://host:9000/x") == "s3://bucket/prefix and http://host:9000/x"
    record = logging.LogRecord("l2_lake.x", logging.ERROR, "", 0, f"to https://u:{SECRET}@h/", None, None)
    assert SECRET not in LogfmtFormatter().format(record)


def test_a_store_error_and_the_description_never_carry_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", leaky_endpoint())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3Store(LakeUrl("bucket", "lake"), connect_timeout=1, read_timeout=1, max_attempts=1)
    assert SECRET not in store.describe() and "***" in store.describe()
    with pytest.raises(StoreError) as failed:
        store.list_dirs("raw")
    assert SECRET not in str(failed.value)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_export_from_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": leaky_endpoint(), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    out = cli("export", "--instrument", BTC, "--start", "2026-11-20T10:00Z", "--end", "2026-11-20T11:00Z",
              "--lake", "s3://bucket/lake", "--out", str(tmp_path / "x.parquet"), env=env)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and SECRET not in out.stderr + out.stdout
    assert re.match(r"l2-collector: error: ", out.stderr)


def damaged_tape_lake(root: Path) -> Path:
    day = root / "raw" / "okx" / "l2_tape" / BTC / "2026-11-20"
    day.mkdir(parents=True)
    (day / "10.parquet").write_bytes(b"PAR1 this is not a tape archive PAR1")
    return day / "10.parquet"


def test_replay_and_plot_of_a_damaged_tape_archive_are_one_line(tmp_path: Path) -> None:
    archive = damaged_tape_lake(tmp_path / "lake")
    replay = cli("replay", "--tape", str(archive), "--data-dir", str(tmp_path / "out"))
    plot = cli("plot", "--tape", "--instrument", BTC, "--hour", "2026-11-20T10:00Z", "--lake", str(tmp_path / "lake"),
               "--out", str(tmp_path / "p.png"))
    for out in (replay, plot):
        assert out.returncode != 0, out.stdout
        assert "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith("l2-collector: error: ") and out.stderr.count("\n") == 1, out.stderr


def test_env_files_that_may_hold_keys_are_installed_private() -> None:
    installs = re.findall(r"install -m (\d+)[^\n]*?(\S+\.env)\n", (REPO / "deploy" / "TWO_HOSTS.md").read_text())
    assert installs, "TWO_HOSTS.md installs no env file"
    for mode, target in installs:
        assert int(mode, 8) & 0o007 == 0, f"{target} would be world-readable ({mode})"
    for example in (REPO / "deploy" / "systemd").glob("*.env.example"):
        assert "0644" not in example.read_text().splitlines()[0], example
