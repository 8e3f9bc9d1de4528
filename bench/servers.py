"""Child processes the benchmarks measure: sagequeue, moto's server, the reference apps.
All listen on 127.0.0.1 only and are stopped by their own pid."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODELS = Path(__file__).resolve().parent / "models"
BENCH_BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,
    interval: float = 0.05,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.status == 200


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class ChildProcess:
    """A child process with a log file; ``stop`` sends SIGTERM then SIGKILL to it alone."""

    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    process: subprocess.Popen | None = None

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept for the child's life
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env={**os.environ, **self.env},
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_python_app(module: str, port: int, log_dir: Path, *extra_args: str) -> ChildProcess:
    """``python -m bench.bareapp`` / ``bench.rawserver`` on a port, once it accepts."""
    child = ChildProcess(
        [sys.executable, "-m", module, "--port", str(port), *extra_args],
        log_dir / f"{module}-{port}.log",
    ).start()
    wait_until(lambda: port_open(port), 20, module, child.process)
    return child


def start_moto(port: int, log_dir: Path) -> ChildProcess:
    child = ChildProcess(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log_dir / f"moto-{port}.log"
    ).start()
    wait_until(lambda: port_open(port), 30, "moto_server", child.process)
    return child


def build_probe_model(work_dir: Path) -> Path:
    """bench/models/probe as a SageMaker-style model.tar.gz (code/inference.py)."""
    target = work_dir / "probe-model.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        tar.add(MODELS / "probe" / "code" / "inference.py", arcname="code/inference.py")
    return target


@dataclass(slots=True, frozen=True)
class EndpointSpec:
    name: str
    instances: int = 1
    max_concurrency: int = 4
    success_topic: str | None = None  # a NotificationConfig SuccessTopic (a webhook URL)


def write_config(work_dir: Path, endpoints: list[EndpointSpec]) -> Path:
    """A sagequeue config file declaring the bench bucket, the probe model and endpoints."""
    model_tar = build_probe_model(work_dir)
    config: dict[str, Any] = {
        "Buckets": [{"Name": BENCH_BUCKET, "Objects": {"models/probe.tar.gz": str(model_tar)}}],
        "Models": [
            {
                "ModelName": "probe",
                "ExecutionRoleArn": "arn:aws:iam::000000000000:role/bench",
                "PrimaryContainer": {
                    "Image": "sagequeue/python",
                    "ModelDataUrl": f"s3://{BENCH_BUCKET}/models/probe.tar.gz",
                },
            }
        ],
        "EndpointConfigs": [
            {
                "EndpointConfigName": ep.name,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "probe",
                        "InitialInstanceCount": ep.instances,
                        "InstanceType": "ml.m5.large",
                    }
                ],
                "AsyncInferenceConfig": {
                    "ClientConfig": {"MaxConcurrentInvocationsPerInstance": ep.max_concurrency},
                    "OutputConfig": {
                        "S3OutputPath": f"s3://{BENCH_BUCKET}/output/{ep.name}",
                        **(
                            {"NotificationConfig": {"SuccessTopic": ep.success_topic}}
                            if ep.success_topic
                            else {}
                        ),
                    },
                },
            }
            for ep in endpoints
        ],
        "Endpoints": [{"EndpointName": ep.name, "EndpointConfigName": ep.name} for ep in endpoints],
    }
    path = work_dir / "sagequeue.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Sagequeue:
    """One ``sagequeue serve`` process (any role) on a data dir."""

    data_dir: Path
    config: Path | None = None
    role: str = "all"
    port: int = field(default_factory=free_port)
    child: ChildProcess | None = None
    module: str = "sagequeue"  # bench.nostore: the same server without durable enqueue
    database: str | None = None  # --database (default: SQLite in the data dir)
    extra_args: list[str] = field(default_factory=list)  # more ``serve`` flags

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Sagequeue:
        argv = [
            sys.executable,
            "-m",
            self.module,
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--role",
            self.role,
            "--log-level",
            "warning",
        ]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        if self.database is not None:
            argv += ["--database", self.database]
        argv += self.extra_args
        log = self.data_dir.parent / f"sagequeue-{self.role}-{self.port}.log"
        self.child = ChildProcess(argv, log, env={"SAGEQUEUE_CONFIG": ""}).start()
        if self.role == "worker":
            wait_until(
                lambda: "worker running" in self.child.log_tail(50),
                timeout,
                "sagequeue worker",
                self.child.process,
            )
        else:
            wait_until(
                lambda: http_ok(self.url + "/healthz"), timeout, "sagequeue", self.child.process
            )
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    @property
    def credentials(self) -> tuple[str, str]:
        parser = configparser.RawConfigParser()
        parser.read(self.data_dir / "credentials")
        return (
            parser.get("sagequeue", "aws_access_key_id"),
            parser.get("sagequeue", "aws_secret_access_key"),
        )

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        access, secret = self.credentials
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 2}),
        )

    def aws_env(self) -> dict[str, str]:
        access, secret = self.credentials
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def wait_in_service(self, names: list[str], timeout: float = 120.0) -> None:
        sagemaker = self.client("sagemaker")

        def all_in_service() -> bool:
            statuses = [
                sagemaker.describe_endpoint(EndpointName=n)["EndpointStatus"] for n in names
            ]
            if "Failed" in statuses:
                raise RuntimeError(f"endpoint failed: {statuses}")
            return all(s == "InService" for s in statuses)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all_in_service():
                    return
            except RuntimeError:
                raise
            except Exception:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"endpoints {names} not InService after {timeout:.0f}s")

    def __enter__(self) -> Sagequeue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
