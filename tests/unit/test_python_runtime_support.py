"""Helpers for runtime and worker tests: model archives written on the fly, a local
object store holding them."""

from __future__ import annotations

import io
import sys
import tarfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples"))

from build import build  # noqa: E402


def make_archive(files: dict[str, str | bytes]) -> bytes:
    """A model.tar.gz holding ``files`` (name -> content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            if isinstance(content, str):
                data = textwrap.dedent(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def example_archives(build_dir: Path) -> dict[str, bytes]:
    """The examples' model.tar.gz files, built once per directory."""
    if not (build_dir / "echo" / "model.tar.gz").exists():
        build(build_dir)
    return {name: (build_dir / name / "model.tar.gz").read_bytes() for name in ("echo", "sklearn")}


async def one_chunk(data: bytes):
    yield data


def python_model(url: str, environment: dict[str, str] | None = None) -> dict:
    return {
        "ModelName": "m",
        "PrimaryContainer": {
            "Image": "sagequeue/python",
            "ModelDataUrl": url,
            "Environment": environment or {},
        },
    }
