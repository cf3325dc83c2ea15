"""`l2-collector export`, run as a process on a planted lake whose hours sit in all three tiers
(curated Parquet, .jsonl.gz, .jsonl): each format holds exactly what `read_books` returns, bad
arguments exit 2 with one line and write nothing, the progress bar shows on a terminal only."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime, timedelta

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from l2_lake import read_books
from l2_lake.tiers.curated import write_parquet
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, make_records, plant_good_hour, with_gap, write_hour

START, END = "2026-11-20T00:01Z", "2026-11-20T03:00Z"


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    plant_good_hour(root, BTC, BASE_HOUR, count=60, depth=30)
    write_parquet(root, BTC, BASE_HOUR, datetime.now(UTC))  # hour 00 curated
    plant_good_hour(root, BTC, BASE_HOUR + timedelta(hours=1), count=60, depth=30, archived=True)
    records, _ = with_gap(make_records(BTC, BASE_HOUR + timedelta(hours=2), count=60, depth=30), 30, BTC,
                          BASE_HOUR + timedelta(hours=2))
    write_hour(root, BTC, BASE_HOUR + timedelta(hours=2), records)  # hour 02 raw, with a gap marker
    return root


def export(lake, out, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "collector", "export", "--lake", str(lake), "--instrument", BTC,
            "--out", str(out), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def expected(lake, depth: int | None = None, include_flagged: bool = False):
    return read_books(BTC, START, END, lake=lake, depth=depth, include_flagged=include_flagged)


def levels(table, side: str) -> list:
    return [[[lvl["price_str"], lvl["size_str"], lvl["orders"]] for lvl in row] for row in table[side].to_pylist()]


def test_parquet_export_is_read_books(lake, tmp_path):
    out = tmp_path / "btc.parquet"
    done = export(lake, out, "--start", START, "--end", END, "--depth", "5", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "exported 149 records" in done.stdout  # 30 + 60 + 59 exact (one gap marker)
    assert pq.read_table(out).equals(expected(lake, depth=5))


def test_csv_and_jsonl_hold_the_exact_strings(lake, tmp_path):
    want = expected(lake, include_flagged=True)
    assert export(lake, tmp_path / "b.csv", "--start", START, "--end", END, "--format", "csv",
                  "--include-flagged").returncode == 0
    csv = pa_csv.read_csv(tmp_path / "b.csv")
    assert csv.num_rows == want.num_rows == 150
    assert [json.loads(text) for text in csv["bids"].to_pylist()] == levels(want, "bids")
    first_row = (tmp_path / "b.csv").read_text().splitlines()[1]
    assert first_row.startswith('"2026-11-20T00:01:01.000Z","okx","perp","books"')  # the record's spelling

    assert export(lake, tmp_path / "b.jsonl", "--start", START, "--end", END, "--format", "jsonl",
                  "--include-flagged").returncode == 0
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [row["asks"] for row in rows] == levels(want, "asks")
    assert [row["seqId"] for row in rows] == want["seqId"].to_pylist()
    assert list(rows[0]) == want.column_names  # the curated column order
    assert sum(row["gap_detected"] for row in rows) == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--start", END, "--end", START], "is after end"),
        (["--start", "2026-11-21T00:00Z", "--end", "2026-11-21T01:00Z"], "no exact record"),
        (["--start", "yesterday", "--end", END], "is not a time"),
        (["--start", START, "--end", END, "--format", "xls"], "invalid choice: 'xls'"),
        (["--start", START, "--end", END, "--depth", "0"], "at least 1 level"),
        (["--start", START], "the following arguments are required: --end"),
    ],
)
def test_a_bad_argument_exits_2_with_one_line_and_writes_nothing(lake, tmp_path, args, says):
    out = tmp_path / "x.parquet"
    done = export(lake, out, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_instrument_missing_lake_and_bad_out_path(lake, tmp_path):
    for argv, says in (
        (["--instrument", "DOGE-USDT-SWAP"], "unknown instrument DOGE-USDT-SWAP"),
        (["--lake", str(tmp_path / "nope")], "does not exist"),
        (["--out", str(tmp_path)], "give a file path"),
    ):
        done = export(lake, tmp_path / "x.csv", "--start", START, "--end", END, *argv)  # later flags win
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and says in done.stderr
    assert list(tmp_path.iterdir()) == []


def run_in_terminal(argv: list[str]) -> str:
    """Run `argv` with a pseudo-terminal as stdout and stderr; everything it wrote."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen(argv, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(lake, tmp_path):
    argv = [sys.executable, "-m", "collector", "export", "--lake", str(lake), "--instrument", BTC,
            "--start", START, "--end", END, "--out", str(tmp_path / "t.parquet")]
    shown = run_in_terminal(argv)
    assert "100%" in shown and "3/3" in shown and "149 rows" in shown
    assert "100%" not in run_in_terminal([*argv, "--quiet"])
    piped = export(lake, tmp_path / "p.parquet", "--start", START, "--end", END)
    assert piped.returncode == 0 and piped.stderr == ""  # not a terminal: no bar in a log


def test_export_and_plot_never_load_dagster(lake, tmp_path):
    code = (
        "import sys\n"
        "from collector.cli import main\n"
        f"assert main(['export', '--lake', {str(lake)!r}, '--instrument', {BTC!r}, '--start', {START!r}, "
        f"'--end', {END!r}, '--out', {str(tmp_path / 'x.parquet')!r}, '--quiet']) == 0\n"
        f"assert main(['plot', '--lake', {str(lake)!r}, '--instrument', {BTC!r}, '--hour', '2026-11-20T02:00Z', "
        f"'--out', {str(tmp_path / 'x.png')!r}]) == 0\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'dagster'], 'dagster was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
