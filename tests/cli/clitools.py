"""Helpers for the sagequeue CLI tests: run the CLI as a child process, goldens, a model."""

from __future__ import annotations

import gzip
import io
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
BUCKET = "cli-tests"
ENDPOINT = "cli-echo"
CLOSED_PORT_URL = "http://127.0.0.1:9"
# The CLI with valid keys pointed at a closed port: anything that sends a request fails (255).
OFFLINE_ENV = {
    **os.environ,
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "SAGEQUEUE_ENDPOINT_URL": CLOSED_PORT_URL,
    "AWS_PAGER": "",
}
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UUID_PLACEHOLDER = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"  # same width: table columns unchanged

# An inference handler (SageMaker inference toolkit conventions): echoes the body, fails on
# "fail", and sleeps on "sleep:<seconds>".
ECHO_HANDLER = """


def model_fn(model_dir):
    return "echo"


def transform_fn(model, body, content_type, accept):
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    if text == "fail":
        raise ValueError("asked to fail")
    if text.startswith("sleep:"):
        import time

        time.sleep(float(text.split(":", 1)[1]))
    return body, accept or content_type or "application/octet-stream"
"""


def normalise(text: str) -> str:
    return UUID_RE.sub(UUID_PLACEHOLDER, text)


def golden(name: str) -> str:
    """A golden file's text; UPDATE_GOLDEN=1 rewrites goldens from the current output."""
    return (GOLDEN / name).read_text(encoding="utf-8")


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"differs from golden {name}"


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
    cwd: Path | None = None,
) -> CliResult:
    completed = subprocess.run(
        [sys.executable, "-m", "sagequeue", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        input=input_text,
        timeout=60,
        cwd=cwd,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def echo_model_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = ECHO_HANDLER.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue())


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (cryptography package), as (cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TlsProxy:
    """A TLS-terminating TCP proxy on 127.0.0.1 in front of a plain HTTP server (a thread)."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        import asyncio
        import socket
        import ssl
        import threading

        self._asyncio = asyncio
        self.target_port = target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _run(self, started) -> None:
        asyncio = self._asyncio
        asyncio.set_event_loop(self.loop)

        async def pipe(reader, writer) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(client_reader, client_writer) -> None:
            try:
                server_reader, server_writer = await asyncio.open_connection(
                    "127.0.0.1", self.target_port
                )
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(
                pipe(client_reader, server_writer), pipe(server_reader, client_writer)
            )

        async def serve() -> None:
            self.server = await asyncio.start_server(
                handle, "127.0.0.1", self.port, ssl=self.context
            )
            started.set()

        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
