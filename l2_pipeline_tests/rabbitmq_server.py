"""A throwaway RabbitMQ server for the distributed-run tests: the session-scoped fixture `rabbitmq_server`
(exposed to the pipeline tests by `l2_pipeline_tests/conftest.py`).

It runs Debian's `rabbitmq-server` package (`/usr/lib/rabbitmq/bin/rabbitmq-server`, and Erlang's
`epmd`) on a fresh temp directory: a node of its own (`l2test-<pid>@localhost`), AMQP on 127.0.0.1 on a
free port, Erlang distribution on another, and an `epmd` of its own on a third, started by us in the
foreground so that nothing outlives the session and no other RabbitMQ on the machine is touched.
Everything it keeps (database, logs, the Erlang cookie: `HOME`) is in the temp directory; no plugin,
no config of the system's (`/etc/rabbitmq`). The default user `guest` may connect from loopback
only, which is all the tests do. At the end of the session the server gets SIGTERM (then SIGKILL),
then `epmd`, and the directory is removed.

Where the package is missing the fixture skips, unless `L2_REQUIRE_RABBITMQ=1` (CI sets it in `.ci/run`,
which installs the package): then it fails, saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from l2_pipeline_tests.postgres_server import free_port

REQUIRE_ENV = "L2_REQUIRE_RABBITMQ"
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # Debian's rabbitmq-server package
START_SECONDS = 120  # ~6 s on an idle machine; much more on 2 shared, busy cores
READY_LINE = "Server startup complete"


@dataclass(frozen=True)
class RabbitMQServer:
    """A running broker: its AMQP port and the URL Celery connects with."""

    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, SIGKILL after 30 s; then whatever the process group still holds (Erlang's helpers)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is ours alone


def _start(base: Path) -> tuple[RabbitMQServer, list[subprocess.Popen]]:
    epmd_bin = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
    amqp, dist, epmd_port = free_port(), free_port(), free_port()
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{amqp}\nloopback_users.guest = true\n")
    (base / "rabbitmq-env.conf").write_text("")
    env = {**os.environ, "HOME": str(base), "ERL_EPMD_PORT": str(epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
           "RABBITMQ_NODENAME": f"l2test-{os.getpid()}@localhost", "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
           "RABBITMQ_NODE_PORT": str(amqp), "RABBITMQ_DIST_PORT": str(dist),
           "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
           "RABBITMQ_LOGS": "-", "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
           "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"), "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
           "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"), "RABBITMQ_PID_FILE": str(base / "pid")}
    log = base / "rabbitmq.log"
    with open(log, "ab") as out:
        started = [subprocess.Popen([epmd_bin, "-port", str(epmd_port), "-address", "127.0.0.1"], env=env,
                                    stdout=out, stderr=out, start_new_session=True)]
        started.append(subprocess.Popen([str(SERVER)], cwd=base, env=env, stdout=out, stderr=out,
                                        stdin=subprocess.DEVNULL, start_new_session=True))
    deadline = time.monotonic() + START_SECONDS
    while READY_LINE not in log.read_text(errors="replace") or not _accepts(amqp):
        if started[1].poll() is not None or time.monotonic() > deadline:
            for proc in reversed(started):
                _stop(proc)
            raise RuntimeError(f"RabbitMQ did not start on 127.0.0.1:{amqp}; its log:\n"
                               f"{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.2)
    return RabbitMQServer(amqp, log), started


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """A RabbitMQ broker for the whole test session (see the module docstring)."""
    if not os.access(SERVER, os.X_OK):
        missing = f"{SERVER} not found; install it with `apt-get install -y rabbitmq-server` (Debian)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but RabbitMQ cannot be started: {missing}", pytrace=False)
        pytest.skip(f"no RabbitMQ to test against ({missing}); set {REQUIRE_ENV}=1 to make this an error")
    base = Path(tempfile.mkdtemp(prefix="l2-rabbitmq-"))
    try:
        server, started = _start(base)
        try:
            yield server
        finally:
            for proc in reversed(started):
                _stop(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)
