"""systemd deployment: the units in deploy/systemd and the collector's sd_notify (collector/systemd.py).

- The unit files pass `systemd-analyze verify` (copies with the install paths pointed at this
  checkout's venv and temporary config files, since verify checks that ExecStart= exists) and state
  the policies docs/DEPLOY.md promises (Type=notify, WatchdogSec, RestartPreventExitStatus=2, ...); the
  example TOML and env files agree with them.
- A real `l2-collector run` against the simulator, with NOTIFY_SOCKET pointing at a datagram socket
  this test binds (what systemd does): READY=1, then records, then WATCHDOG=1 about every second for
  WATCHDOG_USEC=2 s, STOPPING=1 on SIGTERM, exit 0.
- On a real ext4 filesystem frozen with `fsfreeze` (a hung disk; needs root and a loop device, else
  skipped) the pings stop while the writer thread is blocked and resume once it is thawed.
- `notify()` is a no-op without NOTIFY_SOCKET and never raises on a socket that is not there.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import systemd
from collector.config import load_config
from collector_tests.harness import (
    Simulator,
    cli,
    count_records,
    start_simulator,
    stop_process,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent
UNITS_DIR = REPO / "deploy" / "systemd"
UNITS = ("l2-collector.service", "l2-dagster-code.service", "l2-dagster-webserver.service",
         "l2-dagster-daemon.service")
DAGSTER_UNITS = UNITS[1:]
VENV = Path(sys.executable).parent.parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
INSTS = "BTC-USDT-SWAP,ETH-USDT-SWAP"
WATCHDOG_USEC = 2_000_000


# -- the unit files -------------------------------------------------------------------------------

def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd allows a key more than once), continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical = ""
    for raw in path.read_text().splitlines():
        if not logical and (not raw.strip() or raw.lstrip().startswith(("#", ";"))):
            continue
        logical += raw.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        line, logical = logical.strip(), ""
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path.name}: {line!r} before any section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= missing"
    return values[-1]


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an env example (commented ones included: they document optional keys)."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def installed_copy(tmp_path: Path) -> tuple[Path, list[Path]]:
    """The units as they would be installed, with every path they name made real under tmp_path.

    /opt/okx-l2/.venv becomes this venv and /opt/okx-l2 this checkout (verify checks that ExecStart's
    binary exists); /etc/okx-l2, the lake and DAGSTER_HOME become directories here, holding the
    example files. User=okx-l2 is kept: `systemd-analyze verify` does not look the user up.
    """
    etc, units = tmp_path / "etc", tmp_path / "units"
    for d in (etc, units, tmp_path / "lake", tmp_path / "dagster_home"):
        d.mkdir()
    shutil.copy(UNITS_DIR / "collector.toml.example", etc / "collector.toml")
    shutil.copy(UNITS_DIR / "collector.env.example", etc / "collector.env")
    shutil.copy(UNITS_DIR / "dagster.env.example", etc / "dagster.env")
    shutil.copy(REPO / "deploy" / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    replacements = [
        ("/opt/okx-l2/.venv", str(VENV)),
        ("/opt/okx-l2", str(REPO)),
        ("/etc/okx-l2", str(etc)),
        ("/srv/okx-l2/lake", str(tmp_path / "lake")),
        ("/var/lib/okx-l2/dagster_home", str(tmp_path / "dagster_home")),
    ]
    paths = []
    for name in UNITS:
        text = (UNITS_DIR / name).read_text()
        for old, new in replacements:
            text = text.replace(old, new)
        (units / name).write_text(text)
        paths.append(units / name)
    return units, paths


def verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, paths)],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None and os.environ.get("L2_REQUIRE_SYSTEMD_ANALYZE") != "1",
                    reason="systemd-analyze not installed (Debian: apt-get install systemd)")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None, "L2_REQUIRE_SYSTEMD_ANALYZE=1 but systemd-analyze is not installed"
    _, paths = installed_copy(tmp_path)
    result = verify(paths)
    output = (result.stdout + result.stderr).strip()
    print(f"\nsystemd-analyze verify --man=no {' '.join(UNITS)}: exit {result.returncode}, output {output!r}")
    assert result.returncode == 0 and not output, output
    # the check is real: an unknown key or a missing binary is reported
    broken = paths[0].with_name("l2-broken.service")
    broken.write_text(paths[0].read_text().replace("WatchdogSec=", "WatchdogSecs=")
                      .replace(f"{VENV}/bin/l2-collector", f"{VENV}/bin/no-such-binary"))
    result = verify([broken])
    output = result.stdout + result.stderr
    assert "Unknown key 'WatchdogSecs'" in output and "no-such-binary" in output, output


def test_collector_unit_policies() -> None:
    unit = parse_unit(UNITS_DIR / "l2-collector.service")
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "always", "RestartSec": "2",
        "RestartPreventExitStatus": "2", "TimeoutStopSec": "15", "User": "okx-l2", "Group": "okx-l2",
        "EnvironmentFile": "-/etc/okx-l2/collector.env",
        "ExecStart": "/opt/okx-l2/.venv/bin/l2-collector run --config /etc/okx-l2/collector.toml",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
    }
    assert {key: one(unit, "Service", key) for key in expected} == expected
    assert one(unit, "Unit", "StartLimitIntervalSec") and one(unit, "Unit", "StartLimitBurst")
    assert "AF_UNIX" in one(unit, "Service", "RestrictAddressFamilies")  # the notify socket
    # the TOML example is a valid configuration whose lake is the one directory the unit may write
    toml = UNITS_DIR / "collector.toml.example"
    cfg = load_config({}, toml, environ={})
    assert str(cfg.data_dir) in one(unit, "Service", "ReadWritePaths").split()


def test_dagster_unit_policies() -> None:
    env = env_file(UNITS_DIR / "dagster.env.example")
    for key in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB",
                "L2_CODE_SERVER_HOST", "L2_CODE_SERVER_PORT", "L2_DATA_DIR", "L2_INSTRUMENTS", "L2_CADENCE"):
        assert key in env, f"dagster.env.example lacks {key}"
    lake = load_config({}, UNITS_DIR / "collector.toml.example", environ={})
    assert (env["L2_DATA_DIR"], env["L2_INSTRUMENTS"], float(env["L2_CADENCE"])) == (
        str(lake.data_dir), ",".join(lake.instruments), lake.cadence), "dagster.env and collector.toml disagree"
    workspace = "/opt/okx-l2/deploy/workspace.grpc.yaml"
    for name in DAGSTER_UNITS:
        unit = parse_unit(UNITS_DIR / name)
        assert one(unit, "Service", "Restart") == "on-failure", name
        assert one(unit, "Service", "EnvironmentFile") == "/etc/okx-l2/dagster.env", name
        environment = " ".join(unit["Service"]["Environment"])
        assert "DAGSTER_HOME=/var/lib/okx-l2/dagster_home" in environment, name
        assert "/var/lib/okx-l2/dagster_home" in one(unit, "Service", "ReadWritePaths").split(), name
        exec_start = one(unit, "Service", "ExecStart")
        assert exec_start.startswith("/opt/okx-l2/.venv/bin/dagster"), name
        # every ${VAR} the command line uses is set: by the unit (a default) or in the env example
        for var in re.findall(r"\$\{(\w+)\}", exec_start):
            assert f"{var}=" in environment or var in env, f"{name}: ${{{var}}} is set nowhere"
        if name == "l2-dagster-code.service":
            assert "-m l2_pipeline.definitions --location-name l2_pipeline" in exec_start
            assert env["L2_DATA_DIR"] in one(unit, "Service", "ReadWritePaths").split()
        else:
            assert f"-w {workspace}" in exec_start, name
    assert (REPO / workspace.removeprefix("/opt/okx-l2/")).is_file()


# -- sd_notify ------------------------------------------------------------------------------------

class NotifyListener:
    """What systemd does with NOTIFY_SOCKET: a bound datagram socket, every message timestamped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode().splitlines()))

    def times(self, state: str) -> list[float]:
        return [t for t, lines in list(self.messages) if state in lines]

    def wait(self, state: str, timeout: float = 20.0) -> float:
        wait_for(lambda: self.times(state), timeout=timeout, what=f"{state} on NOTIFY_SOCKET")
        return self.times(state)[0]

    def statuses(self) -> list[str]:
        return [line for _, lines in list(self.messages) for line in lines if line.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def start_notified_collector(tmp: Path, sim: Simulator, data_dir: Path, notify_socket: Path) -> subprocess.Popen:
    """harness.start_collector's command, with the environment systemd gives a Type=notify unit."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=str(notify_socket), WATCHDOG_USEC=str(WATCHDOG_USEC))
    with open(tmp / "collector.stderr", "ab") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            cli("run", "--data-dir", str(data_dir), "--instruments", INSTS, "--ws-url", sim.ws_url,
                "--rest-url", sim.rest_url, "--cadence", "0.2", "--status-interval", "1", "--ping-after", "1",
                "--pong-timeout", "1", "--backoff-initial", "0.2", "--backoff-max", "1"),
            env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )


def ping_gaps(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in itertools.pairwise(times)]


@pytest.mark.e2e
def test_collector_notifies_systemd(tmp_path: Path) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--seed", "7")
    data = tmp_path / "lake"
    collector = start_notified_collector(tmp_path, sim, data, listener.path)
    try:
        ready = listener.wait("READY=1")
        assert listener.messages[0][1][0] == "READY=1", "nothing may be sent before READY=1"
        wait_for(lambda: count_records(data) >= 4, what="records after READY=1")
        time.sleep(4.5)
        pings = [t for t in listener.times("WATCHDOG=1") if t > ready]
        gaps = ping_gaps(pings)
        print(f"\nWATCHDOG=1 every {gaps} s (WATCHDOG_USEC={WATCHDOG_USEC}); last {listener.statuses()[-1]!r}")
        assert len(pings) >= 4 and all(0.7 <= g <= 1.3 for g in gaps), gaps
        assert re.fullmatch(r"STATUS=2/2 instruments synced, \d+ lines queued for the writer", listener.statuses()[-1])
        assert listener.times("STOPPING=1") == []
        signalled = time.monotonic()
        assert stop_process(collector) < 5.0
        assert collector.returncode == 0
        assert listener.wait("STOPPING=1", timeout=1) >= signalled
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
        listener.close()
    log = (tmp_path / "collector.stderr").read_text()
    assert "systemd_notify_error" not in log and "task_crashed" not in log


@pytest.fixture
def ext4_lake(tmp_path: Path) -> Iterator[Path]:
    """A real 64 MB ext4 filesystem on a loop device, always thawed and unmounted afterwards."""
    image, mount_point = tmp_path / "lake.img", tmp_path / "ext4"
    mount_point.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    for cmd in (["mkfs.ext4", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image), str(mount_point)]):
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            pytest.skip(f"{cmd[0]} is not installed")
        if result.returncode != 0:
            pytest.skip(f"cannot make a frozen disk ({' '.join(cmd[:3])}: {result.stderr.strip()}); needs root "
                        "and a loop device")
    try:
        yield mount_point
    finally:
        subprocess.run(["fsfreeze", "--unfreeze", str(mount_point)], capture_output=True, check=False)
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


@pytest.mark.e2e
def test_watchdog_withheld_while_the_lake_disk_hangs(tmp_path: Path, ext4_lake: Path) -> None:
    if shutil.which("fsfreeze") is None:
        pytest.skip("fsfreeze (util-linux) is not installed")
    listener = NotifyListener(tmp_path / "notify.sock")
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--seed", "7")
    data = ext4_lake / "lake"
    collector = start_notified_collector(tmp_path, sim, data, listener.path)
    try:
        listener.wait("READY=1")
        wait_for(lambda: count_records(data) >= 4, what="records before the freeze")
        wait_for(lambda: len(listener.times("WATCHDOG=1")) >= 2, timeout=5, what="pings before the freeze")
        subprocess.run(["fsfreeze", "--freeze", str(ext4_lake)], check=True, timeout=30)
        frozen = time.monotonic()
        time.sleep(4.0)  # twice WATCHDOG_USEC: systemd would have killed it by now
        late = [round(t - frozen, 2) for t in listener.times("WATCHDOG=1") if t > frozen]
        assert all(t < 1.5 for t in late), f"pings while the lake writer was blocked: {late}"
        assert any(s.startswith("STATUS=lake writer not responding") for s in listener.statuses())
        assert collector.poll() is None
        subprocess.run(["fsfreeze", "--unfreeze", str(ext4_lake)], check=True, timeout=30)
        thawed = time.monotonic()
        wait_for(lambda: any(t > thawed for t in listener.times("WATCHDOG=1")), timeout=3, what="pings after thaw")
        resumed = min(t for t in listener.times("WATCHDOG=1") if t > thawed) - thawed
        print(f"\nfrozen 4 s: pings within 1.5 s of the freeze {late}; resumed {resumed:.2f} s after the thaw")
        assert stop_process(collector) < 5.0
        assert collector.returncode == 0
    finally:
        subprocess.run(["fsfreeze", "--unfreeze", str(ext4_lake)], capture_output=True, check=False)
        stop_process(collector, signal.SIGKILL)
        sim.stop()
        listener.close()
    log = (tmp_path / "collector.stderr").read_text()
    assert "event=watchdog_withheld" in log and "event=watchdog_resumed" in log


def test_notify_is_a_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.enabled()
    assert systemd.notify("READY=1") is False


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_notify_survives_a_missing_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd, "_warned", set())  # "logged once" counts from here
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "no-such.sock"))
    logger, collect = logging.getLogger("collector.systemd"), Collect()
    logger.addHandler(collect)
    try:
        assert systemd.notify("READY=1") is False
        assert systemd.notify("WATCHDOG=1") is False
        monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # not an AF_UNIX address
        assert systemd.notify("READY=1") is False
        assert systemd.notify("READY=1") is False
    finally:
        logger.removeHandler(collect)
    messages = collect.messages
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"cannot notify systemd at {tmp_path / 'no-such.sock'} ("), messages
    assert messages[1].startswith("NOTIFY_SOCKET='vsock:2:1234' is not a unix socket address"), messages


def test_notify_reaches_abstract_and_path_sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"okx-l2-test-{os.getpid()}-{time.monotonic_ns()}"
    for address, bind_to in ((f"@{name}", b"\0" + name.encode()), (str(tmp_path / "n.sock"), str(tmp_path / "n.sock"))):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(bind_to)
            sock.settimeout(2)
            monkeypatch.setenv("NOTIFY_SOCKET", address)
            assert systemd.notify("READY=1", "STATUS=collecting") is True
            assert sock.recv(4096) == b"READY=1\nSTATUS=collecting"


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": me}) == 2.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
