"""`bash scripts/demo.sh`: the whole product, offline, in one command; one Ctrl-C stops all of it.

1. **History.** `l2-collector history` writes the last `DEMO_HOURS` (6) closed hours of the demo's
   instruments into `DEMO_DIR/data` in seconds: the bundled simulator's 400-level books through the
   collector's own engine and writer, on an accelerated exchange clock, with a gap, a checksum
   failure and a 15-minute outage planted, so the checks fail where they should.
2. **Live.** The simulator (no faults) and `l2-collector run` against it continue the lake from
   the current hour.
3. **Dagster.** `dagster dev` on 127.0.0.1:`DEMO_PORT` (3000) with a project-local
   `DEMO_DIR/dagster_home` (its own `dagster.yaml`). The sensor registers the history at its first
   tick, the backfill runs the six checks and draws each hour's figure, and `lake_health_sensor`
   draws the heatmap; the script says when all of it is there (about a minute; up to three in an
   hour's first two minutes, while the newest closed hour is inside its grace).

Then it runs until Ctrl-C (SIGINT or SIGTERM), or for `DEMO_SECONDS` when set (CI), and stops Dagster,
the collector and the simulator in that order. `DEMO_DIR` (default `./demo`) is replaced on each
start, but only if it is a directory this script made (it holds `.l2-demo`). Logs: `DEMO_DIR/*.log`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from scripts.dagster_ui import (
    ACTIVE_RUN_STATUSES,
    REPO_ROOT,
    WaitTimeout,
    dagster_dev,
    graphql,
    location_pending,
    wait_for,
    write_dagster_yaml,
)

MARKER = ".l2-demo"
L2_COLLECTOR = str(Path(sys.executable).with_name("l2-collector"))
READY_TIMEOUT_S = 300.0

READY_QUERY = """
query Ready($running: [RunStatus!]) {
  raw: assetNodeOrError(assetKey: {path: ["raw_hour"]}) {
    ... on AssetNode { partitionStats { numMaterialized numPartitions } }
  }
  health: assetOrError(assetKey: {path: ["lake_health"]}) {
    ... on Asset { assetMaterializations(limit: 1) { timestamp } }
  }
  newest: assetOrError(assetKey: {path: ["raw_hour"]}) {
    ... on Asset { assetMaterializations(limit: 1) { timestamp } }
  }
  runsOrError(filter: {statuses: $running}, limit: 50) { ... on Runs { results { runId } } }
}
"""


@dataclass(frozen=True)
class Settings:
    """What the environment asks for (every name has a default)."""

    demo_dir: Path
    seconds: float  # 0: until Ctrl-C
    port: int
    hours: int
    instruments: str

    @staticmethod
    def from_env() -> Settings:
        return Settings(Path(os.environ.get("DEMO_DIR") or REPO_ROOT / "demo").resolve(),
                        float(os.environ.get("DEMO_SECONDS") or 0), int(os.environ.get("DEMO_PORT") or 3000),
                        int(os.environ.get("DEMO_HOURS") or 6),
                        os.environ.get("L2_INSTRUMENTS") or "BTC-USDT-SWAP,ETH-USDT-SWAP")

    @property
    def data_dir(self) -> Path:
        return self.demo_dir / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Stop(Exception):
    """SIGINT or SIGTERM: stop everything."""


def _stop(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop


def require_free_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"demo: port {port} on 127.0.0.1 is taken (another Dagster?); stop it or set "
                             "DEMO_PORT to another port") from None


def fresh_demo_dir(demo_dir: Path) -> None:
    if demo_dir.exists() and not (demo_dir / MARKER).exists():
        raise SystemExit(f"demo: {demo_dir} exists and was not made by the demo (no {MARKER} in it); "
                         "set DEMO_DIR to another directory, or remove it")
    shutil.rmtree(demo_dir, ignore_errors=True)
    (demo_dir / "data").mkdir(parents=True)
    (demo_dir / MARKER).write_text("made by scripts/demo.py; replaced on each run\n")
    write_dagster_yaml(demo_dir / "dagster_home")


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in a session of its own (a Ctrl-C reaches only this script, which stops it), stopped on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=out, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def listening(sim: subprocess.Popen[bytes], log: Path) -> tuple[str, str]:
    """The simulator's (ws_url, rest_url) from its first stdout line."""
    line = sim.stdout.readline().decode() if sim.stdout else ""
    parts = line.split()
    if len(parts) != 4 or parts[:2] != ["SIMULATOR", "LISTENING"]:
        raise SystemExit(f"demo: the simulator did not start ({line.strip()!r}); see {log}")
    return parts[2], parts[3]


def not_ready(url: str, expected: int) -> list[str]:
    data = graphql(url + "/graphql", READY_QUERY, {"running": list(ACTIVE_RUN_STATUSES)})
    stats = (data["raw"] or {}).get("partitionStats") or {"numMaterialized": 0}
    reasons = []
    if stats["numMaterialized"] < expected:
        reasons.append(f"hours registered and checked {stats['numMaterialized']}/{expected}")
    # an hour registered after the heatmap was drawn needs a later one: the history's last hour, still in
    # its grace when the demo starts just after an hour turns, or the live hour once it closes
    drawn = newest_timestamp(data["health"])
    if not drawn or drawn < newest_timestamp(data["newest"]):
        reasons.append("the lake_health heatmap drawn after the newest registered hour")
    if runs := data["runsOrError"].get("results"):
        reasons.append(f"{len(runs)} run(s) to finish")
    return reasons


def newest_timestamp(asset: dict | None) -> int:
    """When the asset's newest materialization happened (ms; 0: never)."""
    materializations = (asset or {}).get("assetMaterializations") or []
    return int(materializations[0]["timestamp"]) if materializations else 0


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def main() -> int:
    settings = Settings.from_env()
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    require_free_port(settings.port)
    fresh_demo_dir(settings.demo_dir)
    data, logs = settings.data_dir, settings.demo_dir
    say(f"writing {settings.hours} closed hours of history into {data} …")
    history = subprocess.run([L2_COLLECTOR, "history", "--data-dir", str(data), "--instruments", settings.instruments,
                              "--hours", str(settings.hours)], capture_output=True, text=True, check=False)
    if history.returncode != 0:
        raise SystemExit(f"demo: l2-collector history failed: {history.stderr.strip()}")
    say(history.stdout.strip())
    env = {**os.environ, "DAGSTER_HOME": str(settings.demo_dir / "dagster_home"), "L2_DATA_DIR": str(data),
           "L2_INSTRUMENTS": settings.instruments}
    try:
        with process([L2_COLLECTOR, "simulate", "--port", "0", "--instruments", settings.instruments],
                     logs / "simulator.log") as sim:
            ws_url, rest_url = listening(sim, logs / "simulator.log")
            with process([L2_COLLECTOR, "run", "--data-dir", str(data), "--instruments", settings.instruments,
                          "--ws-url", ws_url, "--rest-url", rest_url, "--status-interval", "10"],
                         logs / "collector.log"):
                say(f"collector running against the simulator at {ws_url} (log: {logs / 'collector.log'})")
                with dagster_dev(env, settings.port, logs / "dagster.log") as dagster:
                    try:
                        wait_for(lambda: location_pending(settings.url + "/graphql", dagster, logs / "dagster.log"),
                                 timeout=120, interval=1)
                    except (WaitTimeout, RuntimeError) as exc:
                        first = str(exc).splitlines()[0]
                        raise SystemExit(f"demo: Dagster did not start ({first}); see {logs / 'dagster.log'}. "
                                         f"Is port {settings.port} taken? Set DEMO_PORT to another") from None
                    say(f"Dagster is up: open {settings.url}  (README.md, 'Your first ten minutes')")
                    expected = settings.hours * len(settings.instruments.split(","))
                    try:
                        wait_for(lambda: not_ready(settings.url, expected), timeout=READY_TIMEOUT_S, interval=2)
                        say(f"ready after {time.monotonic() - started:.0f} s: {expected} hours registered and "
                            "checked, heatmap drawn")
                    except (WaitTimeout, RuntimeError) as exc:
                        say(f"not ready: {exc}; see {logs / 'dagster.log'}")
                    say("Ctrl-C stops everything" if not settings.seconds else
                        f"running until {settings.seconds:.0f} s have passed")
                    deadline = started + settings.seconds if settings.seconds else float("inf")
                    while time.monotonic() < deadline:
                        time.sleep(1)
    except Stop:
        pass
    say(f"stopped; the lake is in {data}, Dagster's instance in {settings.demo_dir / 'dagster_home'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
