"""Screenshots of the Dagster UI over the demo's history (or a planted lake with one damaged hour per check).

    .venv/bin/python scripts/ui_screenshots.py [--out docs/img/ui] [--hours 6] [--planted] [--timeout 900] [--tape LAKE]
                                               [--groups N]

1. Writes, in a temporary directory, the demo's history (`l2-collector history`: BTC-USDT-SWAP and
   ETH-USDT-SWAP over the last `--hours` closed hours, the simulator's 400-level books, with a gap,
   a checksum failure and an outage planted), or with `--planted` a lake of sawtooth books with one
   hour damaged per hour check (`l2_pipeline_tests.damaged_lake.plant_damaged_lake`). `--tape LAKE`
   also copies the tape hours (`l2-collector run --tape`) of LAKE that fall in those hours, for BTC
   and ETH, so the code location has the tape's assets and one more page is shot: a `book_tape`
   partition's picture.
2. Starts `dagster dev -w workspace.yaml` from the repository root on 127.0.0.1 (a free port), with a
   temporary DAGSTER_HOME and `L2_DATA_DIR`, `L2_INSTRUMENTS`, `L2_PARTITIONS_START` pointing at the lake
   (and `L2_INSTRUMENT_GROUPS` with `--groups N`: the pages show group-hour partitions, e.g. `--groups 1
   --out docs/img/ui-groups`).
3. Polls the webserver's GraphQL endpoint until the code location is loaded, both sensors have
   ticked, every planted full hour is a materialized `raw_hour` partition (the last one closes two
   minutes after its end: started at hh:00 the script waits until about hh:03), and no run or backfill
   is in progress (whatever the sensors launched: runless registration, raw_hour runs, backfills);
   `--timeout` seconds (default 900) at most, then fails naming what it was still waiting for. Then it
   launches `lake_health_job` (the heatmap; its schedule would run at :25) and waits for it.
4. Takes PNG screenshots with headless Chromium driven by Playwright (the system `chromium`, no
   browser download: `apt-get install -y chromium`; `pip install -e '.[screenshots]'` brings playwright).
   Playwright rather than `chromium --screenshot`: a check's Partitions tab is not in the URL and
   has to be clicked, and each page is shot once its content (not a spinner) is on screen.
5. Stops `dagster dev` (its whole process group) on exit, error or Ctrl-C, and removes the
   temporary directory (`--keep` keeps it and dagster dev's log).

Prints the path of each PNG written (default directory `docs/img/ui/`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Literal
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from l2_pipeline_tests.damaged_lake import (  # noqa: E402
    DEFAULT_HOURS,
    INSTRUMENTS,
    MIN_HOURS,
    plant_damaged_lake,
    planted_hours,
)
from scripts.dagster_ui import (  # noqa: E402
    ACTIVE_RUN_STATUSES,
    DONE_BACKFILL_STATUSES,
    LOCATION,
    REPOSITORY,
    WaitTimeout,
    dagster_dev,
    free_port,
    graphql,
    location_pending,
    log_tail,
    wait_for,
    write_dagster_yaml,
)

SENSORS = ("raw_hours_sensor", "collector_freshness_sensor")
GRACE = timedelta(minutes=2)  # LakeResource.closed_grace_minutes (default): an hour is closed this long after its end
WINDOW = {"width": 1600, "height": 1100}
SHOW_MARKDOWN = "[Show Markdown]"  # a Markdown metadata value (our images) opens in a dialog from this link


# --- dagster dev --------------------------------------------------------------------------------


# --- GraphQL polling ----------------------------------------------------------------------------


STATE_QUERY = """
query State($running: [RunStatus!]) {
  assetNodeOrError(assetKey: {path: ["raw_hour"]}) {
    __typename ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed numMaterializing } }
  }
  runsOrError(filter: {statuses: $running}, limit: 100) {
    __typename ... on Runs { results { runId status jobName } }
  }
  partitionBackfillsOrError(limit: 100) {
    __typename ... on PartitionBackfills { results { id status numPartitions } }
  }
  %s
}
"""

SENSOR_FIELD = """
  %(alias)s: sensorOrError(sensorSelector: {repositoryLocationName: "%(location)s",
                                            repositoryName: "%(repository)s", sensorName: "%(name)s"}) {
    __typename ... on Sensor { sensorState { status ticks(limit: 3) { status timestamp error { message } } } }
  }
"""


LAUNCH_MUTATION = """
mutation Launch($job: String!, $location: String!, $repository: String!) {
  launchRun(executionParams: {selector: {jobName: $job, repositoryLocationName: $location,
                                          repositoryName: $repository}, runConfigData: {}}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}
"""


def launch_job(url: str, job: str) -> str:
    """Launch `job` of the code location now (as its schedule would); the run id."""
    answer = graphql(url, LAUNCH_MUTATION, {"job": job, "location": LOCATION, "repository": REPOSITORY})["launchRun"]
    if answer["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launching {job}: {answer}")
    return answer["run"]["runId"]


def state_query() -> str:
    fields = "".join(SENSOR_FIELD % {"alias": f"s{i}", "location": LOCATION, "repository": REPOSITORY, "name": name}
                     for i, name in enumerate(SENSORS))
    return STATE_QUERY % fields


@dataclass
class Expectation:
    """What must be in the instance before the screenshots: every planted full hour registered
    (the last one may have ended moments before the start: it closes `GRACE` after its end and the
    sensor registers it on its next tick, a minute later at most)."""

    hours: list[datetime]
    groups: int = 0

    @property
    def partitions(self) -> int:
        from l2_pipeline.partitions import group_key

        columns = {group_key(i, self.groups) for i in INSTRUMENTS} if self.groups else INSTRUMENTS
        return len(columns) * len(self.hours)

    def describe(self, now: datetime) -> str:
        closes = self.hours[-1] + timedelta(hours=1) + GRACE
        return f"the last closes at {closes:%H:%M} UTC" if closes > now else "the sensor ticks every minute"


def settled_pending(url: str, proc: subprocess.Popen[bytes], log_path: Path, expect: Expectation) -> list[str]:
    """Why the instance has not settled yet: unregistered hours, runs or backfills in progress,
    sensors that have not ticked."""
    if proc.poll() is not None:
        raise RuntimeError(f"dagster dev exited with {proc.returncode}:\n{log_tail(log_path)}")
    data = graphql(url, state_query(), {"running": list(ACTIVE_RUN_STATUSES)})
    reasons: list[str] = []
    for i, name in enumerate(SENSORS):
        sensor = data[f"s{i}"]
        if sensor["__typename"] != "Sensor":
            reasons.append(f"sensor {name} to exist ({sensor['__typename']})")
            continue
        ticks = sensor["sensorState"]["ticks"]
        if not ticks:
            reasons.append(f"{name} to tick (status {sensor['sensorState']['status']})")
        elif ticks[0]["status"] == "STARTED":
            reasons.append(f"{name}'s tick in progress to end")
        elif ticks[0]["status"] == "FAILURE":
            message = ((ticks[0].get("error") or {}).get("message") or "").strip().splitlines()
            reasons.append(f"{name} to tick without failing (last tick: {message[0] if message else 'FAILURE'})")
    node = data["assetNodeOrError"]
    expected = expect.partitions
    if node["__typename"] != "AssetNode" or node["partitionStats"] is None:
        reasons.append("asset raw_hour with partitions")
    else:
        stats = node["partitionStats"]
        if stats["numMaterialized"] < expected:
            reasons.append(f"raw_hour materialized partitions {stats['numMaterialized']}/{expected} planted hours "
                           f"({expect.describe(datetime.now(UTC))})")
        if stats["numMaterializing"]:
            reasons.append(f"{stats['numMaterializing']} raw_hour partition(s) materializing")
    runs = data["runsOrError"].get("results", [])
    if runs:
        shown = ", ".join(f"{r['jobName']} {r['runId'][:8]} {r['status']}" for r in runs[:4])
        reasons.append(f"{len(runs)} run(s) to finish ({shown}{', …' if len(runs) > 4 else ''})")
    backfills = [b for b in data["partitionBackfillsOrError"].get("results", [])
                 if b["status"] not in DONE_BACKFILL_STATUSES]
    if backfills:
        shown = ", ".join(f"{b['id']} {b['status']} ({b['numPartitions']} partitions)" for b in backfills[:4])
        reasons.append(f"{len(backfills)} backfill(s) to finish ({shown})")
    return reasons


# --- screenshots --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One interaction before a screenshot, done once the page settled: click the `nth` (from 0)
    visible tab titled `target` ("tab"), type `value` into the input whose placeholder is `target`
    ("fill"), or click the first visible element whose whole text is `target` ("click")."""

    kind: Literal["tab", "fill", "click"]
    target: str
    value: str = ""
    nth: int = 0

    def describe(self) -> str:
        return {"tab": f"tab {self.target}", "fill": f"filter {self.value}", "click": self.target}[self.kind]


@dataclass(frozen=True)
class Shot:
    """One screenshot: a UI path, texts that show its content is on screen, steps to do first."""

    name: str
    path: str
    wait_text: tuple[str, ...]
    steps: tuple[Step, ...] = ()


def check_path(check: str) -> str:
    return f"/assets/raw_hour?view=checks&checkDetail={quote(check)}"


def lineage_path(groups: list[str]) -> str:
    """The global asset graph with every group expanded (`expanded` holds group ids: `global@global:<group>`,
    or `<repository>@<location>:<group>` when the UI groups per code location)."""
    ids = [f"global@global:{g}" for g in groups] + [f"{REPOSITORY}@{LOCATION}:{g}" for g in groups]
    return "/asset-groups?expanded=" + quote(",".join(ids), safe=",:@")


def check_partition_steps(partition: str) -> tuple[Step, ...]:
    """A check's Partitions tab (the 2nd tab so titled: the 1st is the asset's) with `partition`
    (`hour|instrument`) selected: filter the hour list to its hour, click the hour, the instrument."""
    hour, inst_id = partition.split("|")
    return (Step("tab", "Partitions", nth=1), Step("fill", "Filter by hour…", hour), Step("click", hour),
            Step("click", inst_id))


def shots(damaged: dict[str, str], groups: list[str], tape: str | None) -> list[Shot]:
    """The pages to shoot; `damaged`: check → the partition planted to fail it; `groups`: asset groups;
    `tape`: a partition of `book_tape`, if the lake has a tape."""
    out = [Shot("01_raw_hour_partitions", "/assets/raw_hour?view=partitions", ("Partitions", "raw_hour"))]
    if "no_gaps" in damaged:
        out.append(Shot("02_raw_hour_partition_gap",
                        f"/assets/raw_hour?view=partitions&partition={quote(damaged['no_gaps'])}",
                        ("coverage_pct", "gap_markers")))
    out.append(Shot("03_raw_hour_checks", "/assets/raw_hour?view=checks", ("Checks", "no_gaps")))
    for n, check in enumerate(CHECK_PAGES, 4):  # a check that failed nowhere is shown passing everywhere
        steps = check_partition_steps(damaged[check]) if check in damaged else ()
        out.append(Shot(f"{n:02d}_check_{check}", check_path(check), (check,), steps))
    n = 4 + len(CHECK_PAGES)
    out += [
        Shot(f"{n:02d}_check_no_gaps_history", check_path("no_gaps"), ("no_gaps",),
             (Step("tab", "Execution history"),)),
        Shot(f"{n + 1:02d}_check_collector_freshness", check_path("collector_freshness"), ("collector_freshness",),
             (Step("tab", "Execution history"),)),
        Shot(f"{n + 2:02d}_asset_lineage", lineage_path(groups), ("raw_hour", "curated_parquet")),
        Shot(f"{n + 3:02d}_runs", "/runs", ("Runs",)),
        Shot(f"{n + 4:02d}_overview_timeline", "/overview/activity/timeline", ("Timeline",),
             (Step("click", "1hr"),)),
        Shot(f"{n + 5:02d}_raw_hours_sensor", f"/locations/{REPOSITORY}@{LOCATION}/sensors/raw_hours_sensor",
             ("raw_hours_sensor",)),
        Shot(f"{n + 6:02d}_lake_health", "/assets/lake_health", ("heatmap",), (Step("click", SHOW_MARKDOWN),)),
    ]
    if "no_gaps" in damaged:  # the hour's figure: the gap and its resync are marked
        out.append(Shot(f"{n + 7:02d}_book_features_hour_figure",
                        f"/assets/book_features?view=partitions&partition={quote(damaged['no_gaps'])}", ("figure",),
                        (Step("click", SHOW_MARKDOWN),)))
    if tape is not None:  # the tape hour's picture: every message's best bid and ask, its busiest minute
        out.append(Shot(f"{n + 8:02d}_book_tape_hour_figure",
                        f"/assets/book_tape?view=partitions&partition={quote(tape)}", ("figure",),
                        (Step("click", SHOW_MARKDOWN),)))
    return out


def chromium_path(given: str | None) -> str:
    """The Chromium binary to drive: `--chromium`, else Debian's real binary behind the
    /usr/bin/chromium wrapper script, else whatever `chromium` is on PATH."""
    candidates = [given] if given else ["/usr/lib/chromium/chromium", shutil.which("chromium") or "",
                                        shutil.which("chromium-browser") or ""]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("no Chromium found: install it (Debian: apt-get install -y chromium) or pass --chromium PATH")


# Something that spins or says "Loading" while the SPA fetches; a page is shot once none is visible.
BUSY_JS = """() => {
  const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const spinners = [...document.querySelectorAll('[class*="spinner" i], [class*="Spinner"], [role="progressbar"]')]
    .filter(visible);
  const loading = /\\bLoading\\b/.test(document.body ? document.body.innerText : '');
  return spinners.length + (loading ? 1 : 0);
}"""


def take_screenshots(base_url: str, damaged: dict[str, str], tape: str | None, out_dir: Path, chromium: str,
                     page_timeout_ms: int) -> list[Path]:
    """Shoot every page of `shots(...)` into `out_dir`; returns the PNG paths."""
    nodes = graphql(base_url + "/graphql", "{ assetNodes { groupName } }")["assetNodes"]
    groups = sorted({node["groupName"] for node in nodes if node.get("groupName")})
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("playwright is not installed: .venv/bin/pip install -e '.[dev]'") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            context = browser.new_context(viewport=WINDOW, device_scale_factor=1, color_scheme="light",
                                          timezone_id="UTC", locale="en-US")
            page = context.new_page()
            for shot in shots(damaged, groups, tape):
                page.goto(base_url + shot.path, wait_until="domcontentloaded", timeout=page_timeout_ms)
                settle(page, shot.wait_text, page_timeout_ms, PlaywrightError)
                for step in shot.steps:
                    try:
                        do_step(page, step, page_timeout_ms)
                    except PlaywrightError as exc:
                        print(f"  warning: {shot.name}: {step.describe()}: {str(exc).splitlines()[0]}", flush=True)
                        continue
                    settle(page, (), page_timeout_ms, PlaywrightError)
                settle(page, (), page_timeout_ms, PlaywrightError, pause_ms=1500)  # the last step's results
                target = out_dir / f"{shot.name}.png"
                page.screenshot(path=str(target))
                written.append(target)
                steps = "".join(f" → {step.describe()}" for step in shot.steps)
                print(f"{target}  ({shot.path}{steps})", flush=True)
        finally:
            browser.close()
    return written


def do_step(page: Any, step: Step, timeout_ms: int) -> None:
    if step.kind == "tab":
        page.get_by_role("tab", name=step.target, exact=True).nth(step.nth).click(timeout=timeout_ms)
    elif step.kind == "fill":
        page.get_by_placeholder(step.target).filter(visible=True).nth(step.nth).fill(step.value, timeout=timeout_ms)
    else:  # MiddleTruncate keeps a hidden copy of each label to measure it: click the visible one
        page.get_by_text(step.target, exact=True).filter(visible=True).nth(step.nth).click(timeout=timeout_ms)


def settle(page: Any, texts: tuple[str, ...], timeout_ms: int, error: type[Exception], pause_ms: int = 500) -> None:
    """Wait until each of `texts` is visible and no spinner/"Loading" is on screen, then `pause_ms`
    for charts to draw. A page that never settles is shot anyway, with a warning."""
    try:
        for text in texts:
            page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout_ms)
        page.wait_for_function(f"() => ({BUSY_JS})() === 0", timeout=timeout_ms, polling=250)
    except error as exc:
        print(f"  warning: {page.url}: not settled ({str(exc).splitlines()[0]}); shooting anyway", flush=True)
    page.wait_for_timeout(pause_ms)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "img" / "ui", help="PNG directory")
    parser.add_argument("--hours", type=int, default=6,
                        help="closed hours of history (default 6, as the demo; with --planted at least "
                             f"{MIN_HOURS}, e.g. {DEFAULT_HOURS})")
    parser.add_argument("--planted", action="store_true",
                        help="a planted lake with one damaged hour per check (depth 5, sawtooth books) instead of "
                             "the demo's history")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for Dagster to settle")
    parser.add_argument("--port", type=int, default=0, help="webserver port (default: a free one)")
    parser.add_argument("--chromium", help="Chromium binary (default: the system chromium)")
    parser.add_argument("--page-timeout", type=float, default=60.0, help="seconds for one page to render")
    parser.add_argument("--keep", action="store_true", help="keep the temporary lake, DAGSTER_HOME and log")
    parser.add_argument("--groups", type=int, default=0, help="L2_INSTRUMENT_GROUPS (default 0: per instrument)")
    parser.add_argument("--tape", type=Path, metavar="LAKE",
                        help="a lake written by `l2-collector run --tape`: its BTC/ETH tape hours within the planted "
                             "hours are copied in")
    args = parser.parse_args(argv)
    if args.planted and args.hours < MIN_HOURS:
        parser.error(f"--hours must be at least {MIN_HOURS} with --planted (the damaged hours are spread over them)")
    if not 4 <= args.hours <= 48:
        parser.error("--hours must be between 4 and 48 (the demo's three faults are spread over them)")
    return args


CHECK_OF_FAULT = {"gap": "no_gaps", "checksum": "no_checksum_failures", "outage": "coverage"}
CHECK_PAGES = ("coverage", "no_checksum_failures", "no_crossed_books", "no_gaps", "schema_valid", "timestamps_valid")


def demo_history(data_dir: Path, n_hours: int) -> tuple[dict[str, str], list[datetime]]:
    """The demo's history (`l2-collector history`: the simulator's 400-level books with a gap, a checksum
    failure and an outage planted): check → the partition its fault fails, and the hours written."""
    from collector.simulator.history import write_history
    from l2_lake.format import layout
    from l2_pipeline.partitions import partition_key

    end = layout.hour_floor(int(time.time() * 1000))
    _, plants = write_history(data_dir, list(INSTRUMENTS), end, n_hours)
    failing = {CHECK_OF_FAULT[p.fault]: str(partition_key(p.inst_id, layout.hour_floor(int(p.at.timestamp() * 1000))))
               for p in plants}
    return failing, [end - timedelta(hours=n_hours - i) for i in range(n_hours)]


def copy_tape(source: Path, data_dir: Path, hours: list[datetime]) -> str | None:
    """Copy `source`'s tape hour files of INSTRUMENTS within `hours` into `data_dir`; the partition key
    of the last one copied (None if none is in those hours)."""
    from l2_lake.format import layout
    from l2_lake.store import lake_walk
    from l2_pipeline.partitions import partition_key

    copied = None
    for inst_id in INSTRUMENTS:
        for found in lake_walk.iter_hour_files(source, inst_id, after=hours[0] - timedelta(hours=1), until=hours[-1],
                                               prefix=layout.TAPE_PREFIX):
            target = data_dir / found.path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(found.path, target)
            copied = str(partition_key(inst_id, found.hour))
    return copied


def in_groups(key: str, groups: int) -> str:
    """The partition that holds the instrument-hour partition `key` with `groups` instrument groups."""
    from l2_pipeline.partitions import parse_partition_key, partition_key

    return str(partition_key(*parse_partition_key(key), groups))


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chromium = chromium_path(args.chromium)
    # cleanup runs on Ctrl-C and on SIGTERM (SIGINT explicitly: a shell starting us in the
    # background leaves it ignored, and Python then installs no KeyboardInterrupt handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="l2-ui-screenshots-"))
    try:
        data_dir, home, log_path = tmp / "lake", tmp / "dagster_home", tmp / "dagster-dev.log"
        now = datetime.now(UTC)
        if args.planted:
            damaged = plant_damaged_lake(data_dir, now, hours=args.hours)
            hours = planted_hours(now, args.hours)
        else:
            damaged, hours = demo_history(data_dir, args.hours)
        print(f"{'planted' if args.planted else 'wrote the demo history of'} {len(INSTRUMENTS)} instruments × "
              f"{args.hours} closed hours from {hours[0]:%Y-%m-%d %H:00} UTC in {data_dir} "
              f"({time.monotonic() - started:.0f}s); failing:")
        for check, key in damaged.items():
            print(f"  {check:22s} {key}")
        tape = copy_tape(args.tape, data_dir, hours) if args.tape else None
        if args.tape and tape is None:
            print(f"error: {args.tape} has no tape hour of {', '.join(INSTRUMENTS)} between {hours[0]:%Y-%m-%d %H:00} "
                  f"and {hours[-1]:%H:00} UTC (record one with `l2-collector run --tape`)", file=sys.stderr)
            return 2
        if tape:
            print(f"copied the tape of {args.tape}; its picture: book_tape {tape}")
        damaged = {check: in_groups(key, args.groups) for check, key in damaged.items()}
        tape = tape and in_groups(tape, args.groups)
        write_dagster_yaml(home)
        port = args.port or free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("L2_")},  # the pipeline's defaults
            "DAGSTER_HOME": str(home),
            "L2_DATA_DIR": str(data_dir),
            "L2_INSTRUMENTS": ",".join(INSTRUMENTS),
            "L2_PARTITIONS_START": f"{hours[0]:%Y-%m-%d-%H:00}",
            "L2_INSTRUMENT_GROUPS": str(args.groups),
            "L2_REST_URL": "http://127.0.0.1:9",  # nothing here may call OKX (the metadata schedule is off anyway)
        }
        base_url = f"http://127.0.0.1:{port}"
        url = base_url + "/graphql"
        print(f"starting dagster dev on {base_url} (DAGSTER_HOME={home}, log {log_path})", flush=True)
        with dagster_dev(env, port, log_path) as proc:
            try:
                wait_for(lambda: location_pending(url, proc, log_path), timeout=min(args.timeout, 300), interval=2)
                print(f"code location loaded ({time.monotonic() - started:.0f}s); waiting for sensors, runs and "
                      "backfills to finish", flush=True)
                wait_for(lambda: settled_pending(url, proc, log_path, Expectation(hours, args.groups)),
                         timeout=args.timeout, interval=5, settle=2)
            except (WaitTimeout, RuntimeError) as exc:
                print(f"error: {exc}\n--- last lines of {log_path} ---\n{log_tail(log_path)}", file=sys.stderr)
                return 1
            # lake_health_sensor would draw it within 30 s; draw it now from the registered hours
            print(f"settled ({time.monotonic() - started:.0f}s); drawing lake_health "
                  f"(run {launch_job(url, 'lake_health_job')[:8]})", flush=True)
            wait_for(lambda: settled_pending(url, proc, log_path, Expectation(hours, args.groups)), timeout=300,
                     interval=3)
            print(f"taking screenshots ({time.monotonic() - started:.0f}s)", flush=True)
            take_screenshots(base_url, damaged, tape, args.out, chromium, int(args.page_timeout * 1000))
        print(f"done in {time.monotonic() - started:.0f}s")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
