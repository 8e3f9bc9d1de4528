"""A fleet of real ``sagequeue serve`` processes sharing one store: ``--role api``
processes that take requests and ``--role worker`` processes that run the models."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ServerProcess, free_port


@dataclass
class Fleet:
    root: Path
    shared_args: list[str]  # the store: --database / --object-store / --s3-endpoint-url
    worker_args: list[str] = field(default_factory=list)
    apis: list[ServerProcess] = field(default_factory=list)
    workers: list[ServerProcess] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def start_api(self) -> ServerProcess:
        server = ServerProcess(
            self.data_dir, free_port(), ["--role", "api", *self.shared_args]
        ).start()
        self.apis.append(server)
        return server

    def start_worker(self, *extra: str) -> ServerProcess:
        server = ServerProcess(
            self.data_dir,
            free_port(),
            ["--role", "worker", *self.shared_args, *self.worker_args, *extra],
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
        for server in [*self.workers, *self.apis]:
            if server.process is not None and server.process.poll() is None:
                # A stopped (SIGSTOP) process must be continued to take SIGTERM.
                server.process.send_signal(signal.SIGCONT)
            server.stop(timeout=40)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout} s")


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(shared_args: list[str], worker_args: list[str] | None = None) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet-{len(made)}", shared_args, worker_args or [])
        fleet.data_dir.mkdir(parents=True)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()
