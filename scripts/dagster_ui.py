"""Driving `dagster dev` from a script or a test: start it on loopback in a process group of its own
and stop all of it, and ask its webserver over GraphQL, waiting until a state is reached. Used by
`scripts/demo.py`, `scripts/ui_screenshots.py` and the demo's test; imports no Dagster.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = "l2_pipeline"
REPOSITORY = "__repository__"  # the repository name Dagster gives a `Definitions` object
ACTIVE_RUN_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
DONE_BACKFILL_STATUSES = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})


class WaitTimeout(RuntimeError):
    """Dagster did not reach the awaited state in time."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_dagster_yaml(home: Path) -> None:
    """A DAGSTER_HOME of its own: no telemetry, no first-visit welcome dialog over the screenshots."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")


@contextmanager
def dagster_dev(env: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`dagster dev -w workspace.yaml` in a process group of its own, stopped on exit (`stop_group`)."""
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster) if dagster.exists() else "dagster", "dev", "-w", "workspace.yaml",
           "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop `dagster dev` and everything in its process group (webserver, daemon, code servers, run
    workers). SIGTERM to `dagster dev` alone first: it takes it as Ctrl-C and shuts its services down
    through their shutdown pipes (seconds; signalling the whole group at once can leave the
    webserver hanging). Whatever is left after that gets SIGTERM, then SIGKILL."""
    steps = ((lambda: proc.send_signal(signal.SIGTERM), 90.0),
             (lambda: os.killpg(proc.pid, signal.SIGTERM), 15.0),
             (lambda: os.killpg(proc.pid, signal.SIGKILL), 10.0))
    for send, wait in steps:
        proc.poll()
        if not group_alive(proc.pid):
            break
        with suppress(ProcessLookupError):
            send()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_alive(proc.pid):
            proc.poll()  # reap dagster dev itself, or its zombie keeps the group "alive"
            time.sleep(0.2)
    proc.poll()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""



def graphql(url: str, query: str, variables: dict[str, Any] | None = None, timeout: float = 20.0) -> dict[str, Any]:
    """POST one query; the `data` of the answer (RuntimeError on GraphQL errors)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.load(response)
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def wait_for(what: Callable[[], list[str]], timeout: float, interval: float = 5.0, settle: int = 1) -> None:
    """Call `what` (→ the reasons it is not there yet, empty when it is) every `interval` s until it
    returns no reason on `settle` consecutive calls; WaitTimeout with the last reasons after `timeout` s."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    ok_in_a_row = 0
    last: list[str] = []
    while True:
        try:
            reasons = what()
        except (OSError, ValueError) as exc:  # not listening yet, reset, timed out, not JSON yet
            reasons = [f"the webserver to answer ({exc})"]
        if reasons != last and reasons:
            print(f"  [{time.monotonic() - started:5.0f}s] waiting for: " + "; ".join(reasons), flush=True)
        last = reasons
        ok_in_a_row = 0 if reasons else ok_in_a_row + 1
        if ok_in_a_row >= settle:
            return
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for: " + "; ".join(last))
        time.sleep(interval)


def location_pending(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> list[str]:
    """Why the code location is not usable yet (RuntimeError if it failed to load or dagster died)."""
    if proc.poll() is not None:
        raise RuntimeError(f"dagster dev exited with {proc.returncode}:\n{log_tail(log_path)}")
    data = graphql(url, LOCATION_QUERY)["workspaceOrError"]
    entries = {e["name"]: e for e in data.get("locationEntries", [])}
    entry = entries.get(LOCATION)
    if entry is None or entry["loadStatus"] != "LOADED":
        return [f"code location {LOCATION} to load"]
    loaded = entry["locationOrLoadError"]
    if loaded and loaded["__typename"] == "PythonError":
        raise RuntimeError(f"code location {LOCATION} failed to load:\n{loaded['message']}")
    return []


