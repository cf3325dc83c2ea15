"""`bash scripts/demo.sh` as a newcomer runs it, headless and bounded (`DEMO_SECONDS`): within its
budget the webserver's GraphQL shows the history's partitions materialized, each check FAILED exactly
on the hour its fault was planted in and SUCCEEDED elsewhere, the heatmap drawn, and the freshness
check passing (the live collector runs). One SIGINT then stops all of it, exit 0, nothing left running.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from l2_lake.quality.verdicts import COVERAGE, HOUR_CHECKS, NO_CHECKSUM_FAILURES, NO_GAPS
from l2_pipeline.partitions import partition_key
from scripts.dagster_ui import REPO_ROOT, free_port, graphql

BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"
HOURS = 4
READY_WITHIN_S = 360  # the demo's 300 s once Dagster is up; about three minutes when an hour just turned (grace)

CHECK_QUERY = """
query($check: String!) {
  assetCheckExecutions(assetKey: {path: ["raw_hour"]}, checkName: $check, limit: 100) { status partition }
}
"""
STATE_QUERY = """
{
  raw: assetNodeOrError(assetKey: {path: ["raw_hour"]}) { ... on AssetNode { partitionStats { numMaterialized } } }
  health: assetOrError(assetKey: {path: ["lake_health"]}) {
    ... on Asset { assetMaterializations(limit: 1) { metadataEntries { label ... on IntMetadataEntry { intValue } } } }
  }
  fresh: assetCheckExecutions(assetKey: {path: ["raw_hour"]}, checkName: "collector_freshness", limit: 1) { status }
}
"""


def failed_partitions(url: str, check: str, history: set[str]) -> set[str]:
    """The history's partitions `check` failed (an hour the live collector closed meanwhile is left out)."""
    executions = [e for e in graphql(url, CHECK_QUERY, {"check": check})["assetCheckExecutions"]
                  if e["partition"] in history]
    assert sorted(e["partition"] for e in executions) == sorted(history), check  # one execution per hour
    return {e["partition"] for e in executions if e["status"] == "FAILED"}


@pytest.mark.timeout(READY_WITHIN_S + 180)
def test_the_demo_shows_the_checked_history_in_dagster_and_stops_on_one_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DEMO_DIR": str(tmp_path / "demo"), "DEMO_PORT": str(port), "DEMO_HOURS": str(HOURS),
           "DEMO_SECONDS": str(READY_WITHIN_S + 120), "L2_INSTRUMENTS": f"{BTC},{ETH}"}
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("demo: ready after") or line.startswith("demo: not ready"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(READY_WITHIN_S), "".join(lines[-20:])
        assert any(line.startswith("demo: ready after") for line in lines), "".join(lines[-20:])
        url = f"http://127.0.0.1:{port}/graphql"
        output = "".join(lines)
        history, planted = history_partitions(output), planted_partitions(output)
        assert len(history) == 2 * HOURS and set(planted) == {NO_GAPS, NO_CHECKSUM_FAILURES, COVERAGE}, output
        for check in HOUR_CHECKS:
            assert failed_partitions(url, check, history) == planted.get(check, set()), check
        state = graphql(url, STATE_QUERY)
        assert state["raw"]["partitionStats"]["numMaterialized"] >= 2 * HOURS  # (+ a live hour that closed)
        health = {e["label"]: e.get("intValue") for e in state["health"]["assetMaterializations"][0]["metadataEntries"]}
        assert health["warning"] == 2 and health["failed"] >= 1 and health["passed"] >= 2 * HOURS - 3
        assert [e["status"] for e in state["fresh"]] == ["SUCCEEDED"], "the live collector is running"
    finally:
        proc.send_signal(signal.SIGINT)  # one Ctrl-C
        code = proc.wait(timeout=120)
    assert code == 0 and lines[-1].startswith("demo: stopped"), "".join(lines[-20:])
    assert not left_running(str(tmp_path / "demo")), "the collector, the simulator and dagster dev are gone"
    collector_log = (tmp_path / "demo" / "collector.log").read_text()
    dagster_log = (tmp_path / "demo" / "dagster.log").read_text()
    assert "level=warning" not in collector_log and "level=error" not in collector_log  # a clean run is quiet
    assert " - WARNING - " not in dagster_log and " - ERROR - " not in dagster_log
    assert "Traceback" not in collector_log + dagster_log


CHECK_OF_FAULT = {"gap": NO_GAPS, "checksum": NO_CHECKSUM_FAILURES, "outage": COVERAGE}
PLANT_RE = re.compile(r"(gap|checksum|outage) in (\S+) at (\d{4}-\d\d-\d\dT\d\d):\d\dZ")


def planted_partitions(output: str) -> dict[str, set[str]]:
    """check → the partitions the demo says it planted a fault in (its history line names them: the
    hours are the demo's own, whatever hour the test reads the clock in)."""
    planted: dict[str, set[str]] = {}
    for fault, inst_id, hour in PLANT_RE.findall(output):
        start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
        planted.setdefault(CHECK_OF_FAULT[fault], set()).add(str(partition_key(inst_id, start)))
    return planted


RANGE_RE = re.compile(r"closed hour\(s\), (\d{4}-\d\d-\d\dT\d\d):00Z to (\d{4}-\d\d-\d\dT\d\d):00Z")


def history_partitions(output: str) -> set[str]:
    """The partitions of the hours the demo's history wrote, as its history line names them."""
    first, end = (datetime.strptime(h, "%Y-%m-%dT%H").replace(tzinfo=UTC) for h in RANGE_RE.search(output).groups())
    hours = [first + timedelta(hours=i) for i in range(int((end - first).total_seconds()) // 3600)]
    return {str(partition_key(inst_id, hour)) for inst_id in (BTC, ETH) for hour in hours}


def left_running(demo_dir: str) -> list[str]:
    """Command lines of processes that still name the demo's directory."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if demo_dir in text:
            found.append(text)
    return found


def test_the_demo_refuses_a_taken_port_at_once(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "DEMO_DIR": str(tmp_path / "demo"), "DEMO_PORT": str(port)}
        done = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    assert done.returncode == 1 and f"port {port} on 127.0.0.1 is taken" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "demo").exists()
