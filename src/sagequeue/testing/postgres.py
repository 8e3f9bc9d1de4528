"""A throw-away PostgreSQL server from Debian's binaries (``/usr/lib/postgresql/*/bin``),
for the tests and the benchmarks.

PostgreSQL refuses to run as root, and CI runs as root: then ``initdb`` and ``pg_ctl`` run
as the ``postgres`` user (``runuser``) in a directory that user owns. The server listens
on 127.0.0.1 on a free port with ``trust`` authentication, and keeps its unix socket in
its own directory. ``make test`` / ``make bench`` install the binaries when missing
(``apt-get install -y postgresql``).

    server = PostgresServer().start()
    url = server.create_database()          # a fresh, empty database
    server.restart()                        # pg_ctl restart -m fast (same port and data)
    server.close()                          # stop it and remove its directory
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
START_TIMEOUT_SECONDS = 60


class PostgresNotInstalled(RuntimeError):
    """No PostgreSQL server binaries: ``apt-get install -y postgresql`` (``make test``
    does it)."""


def bin_dir() -> Path:
    """The newest installed server's bin directory."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    found = sorted((p.parent for p in PG_ROOT.glob("*/bin/pg_ctl")), key=version)
    if not found:
        raise PostgresNotInstalled(
            f"no PostgreSQL server under {PG_ROOT}/*/bin: run `apt-get install -y postgresql` "
            "(`make test` and `make bench` do)"
        )
    return found[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Durable: PostgreSQL's defaults (fsync, full page writes, synchronous commit), what the
# benchmarks measure. Tests trade crash safety of the *machine* for speed: without fsync a
# commit still reaches the OS before it is acknowledged (synchronous_commit stays on), so
# every acknowledged write survives a crash or restart of the server itself.
FAST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
}


class PostgresServer:
    """One PostgreSQL server in a temporary directory, run by the ``postgres`` user when
    this process is root."""

    def __init__(
        self,
        *,
        durable: bool = False,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        parent_dir: Path | None = None,
    ) -> None:
        self.bin = bin_dir()
        self.major_version = int(self.bin.parent.name.split(".")[0])
        self.port = port or free_port()
        self.durable = durable
        self.settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "max_connections": "300",
            "log_min_messages": "warning",
            "log_min_error_statement": "panic",  # tests provoke errors on purpose
            **({} if durable else FAST_SETTINGS),
            **(settings or {}),
        }
        # Not under pytest's tmp dirs: those are private to root, and the postgres user
        # must reach its data directory.
        self.dir = Path(tempfile.mkdtemp(prefix="sagequeue-pg-", dir=parent_dir))
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "server.log"
        self._names = itertools.count(1)
        self._started = False

    # ------------------------------------------------------------------ commands
    @property
    def _as_server_user(self) -> list[str]:
        return ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []

    def _run(self, *argv: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        completed = subprocess.run(
            [*self._as_server_user, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"{Path(argv[0]).name} failed ({completed.returncode}): "
                f"{(completed.stderr or completed.stdout).strip()}\n{self.log_tail()}"
            )

    def _pg_ctl(self, *args: str) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            *args,
        )

    # ------------------------------------------------------------------ life cycle
    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.dir, SERVER_USER, SERVER_USER)
        if not self.data_dir.exists():
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SERVER_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                *([] if self.durable else ["--no-sync"]),
            )
            conf = "".join(f"{key} = {value}\n" for key, value in self.settings.items())
            conf += f"unix_socket_directories = '{self.dir}'\n"
            with open(self.data_dir / "postgresql.auto.conf", "a") as handle:
                handle.write(conf)
        self._pg_ctl("start")
        self._started = True
        return self

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the data and port stay."""
        self._pg_ctl("restart", "-m", mode)

    def stop(self, mode: str = "fast") -> None:
        if self._started:
            self._pg_ctl("stop", "-m", mode)
            self._started = False

    def close(self) -> None:
        """Stop the server (if running) and remove its directory."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._started

    # ------------------------------------------------------------------ databases
    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, params: Any = None, *, database: str = "postgres") -> list[Any]:
        """Run one statement (autocommit) and return its rows (if any)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """A new database (a copy of ``template`` when given, which must have no open
        connection); returns its URL. Copying a small template is a file copy."""
        name = name or f"db_{os.getpid()}_{next(self._names)}"
        sql = f'CREATE DATABASE "{name}"'
        if template is not None:
            sql += f' TEMPLATE "{template}"'
            if self.major_version >= 15:  # else it is the only strategy
                sql += " STRATEGY FILE_COPY"
        self.execute(sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
