"""A throwaway PostgreSQL server for the tests: the session-scoped fixture `postgres_server`
(exposed to the pipeline tests by `l2_pipeline_tests/conftest.py`).

It runs the distribution's own binaries (`initdb`, `pg_ctl`, `postgres`; Debian's `postgresql`
package: `initdb` on the PATH, else `/usr/lib/postgresql/<version>/bin`) on a data directory in a
fresh temp directory: listening on 127.0.0.1 only, on a free port, with its unix socket in the temp
directory, trust authentication for local and loopback connections, and `fsync=off` (nothing
here needs to survive a crash). PostgreSQL refuses to run as root, so when the tests run as root
(CI) `initdb` and `pg_ctl` run as the `postgres` system user (`runuser -u postgres --`) and the
temp directory is handed to it. At the end of the session the server is stopped
(`pg_ctl stop -m fast`) and the directory removed.

Where the binaries are missing the fixture skips, unless `L2_REQUIRE_POSTGRES=1` (CI sets it in
`.ci/run`, which installs the package): then it fails, saying what to install.

Tests get a role `dagster` (password `dagster`, not a superuser) and create a database of their
own with `PostgresServer.create_database` (empty, or a copy of a template database) and drop it
with `drop_database`; `PostgresServer.dagster_env` gives the `DAGSTER_PG_*` variables
`deploy/dagster.yaml` reads, `dagster_storage` its `storage` section with the values written out.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from psycopg2.sql import Composable

REQUIRE_ENV = "L2_REQUIRE_POSTGRES"
SYSTEM_USER = "postgres"  # the Debian package's system user, owner of the data directory when we are root
SUPERUSER = "postgres"  # the cluster's bootstrap superuser (initdb -U)
ROLE = "dagster"  # what the Dagster instance connects as
ROLE_PASSWORD = "dagster"  # trust auth accepts any; set so the instance config carries one, as in production
BINARIES = ("initdb", "pg_ctl", "postgres")
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries (or no `postgres` user to run them as root)."""


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres: that of `initdb` on the PATH (symlinks
    resolved: Debian links them from /usr/lib/postgresql/<version>/bin), else the newest
    /usr/lib/postgresql/<version>/bin."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p)],
                                           reverse=True)]
    for bin_dir in candidates:
        if all(os.access(bin_dir / name, os.X_OK) for name in BINARIES):
            return bin_dir
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin; "
        "install them with `apt-get install -y postgresql` (Debian)")


def run_as_prefix() -> list[str]:
    """`runuser -u postgres --` when we are root (PostgreSQL refuses root), else nothing."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresUnavailable(f"running as root and there is no `{SYSTEM_USER}` system user to run "
                                  "PostgreSQL as (Debian's `postgresql` package creates it)") from None
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and `runuser` (util-linux) is missing")
    return ["runuser", "-u", SYSTEM_USER, "--"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: where it listens, and how to give a test a database of its own."""

    host: str
    port: int
    socket_dir: Path
    version: str
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def connect(self, db_name: str = "postgres", user: str = SUPERUSER):
        """A psycopg2 connection in autocommit (CREATE/DROP DATABASE cannot run in a transaction)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=user, dbname=db_name)
        conn.autocommit = True
        return conn

    def execute(self, statement: str | Composable, params: tuple = ()) -> None:
        """Run one statement as the superuser on the `postgres` database (in autocommit)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
        finally:
            conn.close()

    def create_database(self, prefix: str = "dagster", template: str | None = None) -> str:
        """A new database owned by the `dagster` role, empty or (`template`) a copy of that database;
        returns its name (unique on this server)."""
        from psycopg2 import sql

        name = f"{prefix}_{next(self._names)}"
        statement = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.execute(statement)
        return name

    def seal_template(self, name: str) -> None:
        """Let nothing connect to the database `name` any more (autovacuum included), so that
        `create_database(template=name)` never finds it in use."""
        from psycopg2 import sql

        self.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """Drop the database `name`, ending any session still connected to it."""
        from psycopg2 import sql

        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def dagster_env(self, db_name: str) -> dict[str, str]:
        """The `DAGSTER_PG_*` variables deploy/dagster.yaml reads, pointing at `db_name` here."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": ROLE,
                "DAGSTER_PG_PASSWORD": ROLE_PASSWORD, "DAGSTER_PG_DB": db_name}

    def dagster_storage(self, db_name: str) -> dict[str, Any]:
        """The instance config's `storage` section of deploy/dagster.yaml, its values written out:
        run, event log and schedule storage in `db_name` here."""
        postgres_db = {"hostname": self.host, "port": self.port, "username": ROLE, "password": ROLE_PASSWORD,
                       "db_name": db_name, "scheme": "postgresql+psycopg2"}
        return {"storage": {"postgres": {"postgres_db": postgres_db}}}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


@contextlib.contextmanager
def running_postgres(bin_dir: Path, as_user: list[str]) -> Iterator[PostgresServer]:
    """Start a server in a new temp directory; stop it and remove the directory on exit."""
    base = Path(tempfile.mkdtemp(prefix="l2-postgres-"))  # short: the socket path must fit in 107 bytes
    data, log = base / "data", base / "postgres.log"
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        if as_user:
            owner = pwd.getpwnam(SYSTEM_USER)
            os.chown(base, owner.pw_uid, owner.pw_gid)
        version = _run([str(bin_dir / "postgres"), "--version"], base).stdout.strip()
        _run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
              "--no-locale", "--no-sync"], base)
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        for attempt in range(START_ATTEMPTS):
            port = free_port()
            settings = {"listen_addresses": "'127.0.0.1'", "port": str(port), "unix_socket_directories": f"'{base}'",
                        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                        "max_connections": "200", "logging_collector": "off"}
            # postgresql.auto.conf is read last: its settings win over postgresql.conf's
            (data / "postgresql.auto.conf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
            try:
                _run([*pg_ctl, "-l", str(log), "-w", "-t", "60", "start"], base)
                started = True
                break
            except RuntimeError:
                log_text = log.read_text(errors="replace") if log.exists() else ""
                if "could not bind" not in log_text or attempt == START_ATTEMPTS - 1:
                    raise RuntimeError(f"PostgreSQL did not start; its log:\n{log_text}") from None
        server = PostgresServer(host="127.0.0.1", port=port, socket_dir=base, version=version)
        server.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (ROLE_PASSWORD,))
        yield server
    finally:
        if started:
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], cwd=base, capture_output=True, check=False,
                           timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session (see the module docstring)."""
    try:
        bin_dir, as_user = find_bin_dir(), run_as_prefix()
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but PostgreSQL cannot be started: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server to test against ({exc}); set {REQUIRE_ENV}=1 to make this an error")
    with running_postgres(bin_dir, as_user) as server:
        yield server
