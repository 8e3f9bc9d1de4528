"""A fleet of real ``sagequeue serve`` processes sharing one store: ``--role api``
processes that take requests and ``--role worker`` processes that run the models."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, free_port, wait_until


@dataclass
class Fleet:
    """Processes sharing one store. ``hosts``: each process has its own data dir, as on
    its own host (the store is PostgreSQL and S3), and all share one credentials file;
    otherwise all share one data dir (SQLite and objects on one host)."""

    root: Path
    shared_args: list[str]  # the store: --database / --object-store / --s3-endpoint-url
    worker_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    hosts: bool = False
    apis: list[ServerProcess] = field(default_factory=list)
    workers: list[ServerProcess] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def credentials_file(self) -> Path | None:
        return self.root / "credentials" if self.hosts else None

    def _process(self, args: list[str]) -> ServerProcess:
        data_dir = self.data_dir
        if self.hosts:
            number = len(self.apis) + len(self.workers)
            data_dir = self.root / f"host-{number}" / "data"
            data_dir.mkdir(parents=True)
            args = [*args, "--credentials-file", str(self.credentials_file)]
        return ServerProcess(
            data_dir, free_port(), args, env=self.env, credentials_file=self.credentials_file
        )

    def start_api(self) -> ServerProcess:
        server = self._process(["--role", "api", *self.shared_args]).start()
        self.apis.append(server)
        return server

    def start_worker(self, *extra: str) -> ServerProcess:
        server = self._process(
            ["--role", "worker", *self.shared_args, *self.worker_args, *extra]
        ).start(wait=False)
        self.workers.append(server)
        wait_until(lambda: "worker running" in server.log_text(), f"worker {len(self.workers)}")
        return server

    @property
    def api(self) -> ServerProcess:
        return self.apis[0]

    def model_processes(self) -> dict[int, list[int]]:
        """Running model instance processes by worker process id."""
        found: dict[int, list[int]] = {}
        for worker in self.workers:
            if worker.process is None or worker.process.poll() is not None:
                continue
            pids = subprocess.run(
                ["pgrep", "-P", str(worker.process.pid), "-f", "sagequeue.runtimes.python_worker"],
                capture_output=True,
                text=True,
            ).stdout.split()
            found[worker.process.pid] = [int(pid) for pid in pids]
        return found

    def stop(self) -> None:
        """SIGTERM to every process at once, then wait for each (a stopped one, after
        SIGSTOP, is continued first so that it can take the signal)."""
        running = [
            server
            for server in [*self.workers, *self.apis]
            if server.process is not None and server.process.poll() is None
        ]
        for server in running:
            assert server.process is not None
            server.process.send_signal(signal.SIGCONT)
            server.process.send_signal(signal.SIGTERM)
        for server in running:
            server.stop(timeout=40)


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(
        shared_args: list[str],
        worker_args: list[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        hosts: bool = False,
    ) -> Fleet:
        fleet = Fleet(
            tmp_path / f"fleet-{len(made)}", shared_args, worker_args or [], env or {}, hosts
        )
        fleet.data_dir.mkdir(parents=True)
        if hosts:
            assert fleet.credentials_file is not None
            fleet.credentials_file.write_text(
                "[sagequeue]\naws_access_key_id = SQFLEETTESTKEY\n"
                "aws_secret_access_key = fleet-test-secret\n"
            )
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def fleet_store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The store a fleet shares: SQLite and local objects in one data dir (one host), or
    PostgreSQL and moto's S3 with a data dir per process (many hosts)."""
    if request.param == "sqlite":
        return {"shared_args": [], "hosts": False}
    return postgres_fleet_store(
        request.getfixturevalue("postgres_url"), request.getfixturevalue("moto_endpoint")
    )


def postgres_fleet_store(database: str, s3: str) -> dict[str, Any]:
    return {
        "shared_args": ["--database", database, "--object-store", "s3://", "--s3-endpoint-url", s3],
        "hosts": True,
        "env": {
            "AWS_ACCESS_KEY_ID": "moto",
            "AWS_SECRET_ACCESS_KEY": "moto",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        },
        "database": database,
    }
