"""The worker's own guard on model responses (max_model_response_bytes): an instance
process that sends a frame larger than the limit (the instance checks the size itself;
this holds if it does not) has the frame read in pieces and dropped, never held, and
the request fails with the reason; the next response on the same pipe still arrives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sagequeue.ports import ModelInvocationError
from sagequeue.runtimes.frames import FrameKind, encode_frame
from sagequeue.runtimes.python_runtime import FRAME_OVERHEAD, LaunchSpec, PythonInstance

pytestmark = pytest.mark.anyio

LIMIT = 1024 * 1024


class FakeProcess:
    """What ``PythonInstance`` reads results from: a pipe fed by the test."""

    def __init__(self) -> None:
        self.stdout = asyncio.StreamReader(limit=2**20)
        self.pid = 0
        self.returncode: int | None = None

    async def wait(self) -> int:
        self.returncode = 0
        return 0


def result_frame(number: int, body: bytes) -> bytes:
    meta = b'{"content_type": "application/octet-stream"}'
    return encode_frame(FrameKind.RESULT, number, len(meta).to_bytes(4, "big") + meta + body)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_oversized_result_frame_is_dropped_unread_and_fails_its_request(
    tmp_path: Path,
) -> None:
    instance = PythonInstance(LaunchSpec(tmp_path, tmp_path, "inference.py"), 2, LIMIT)
    instance._closing = True  # no restart when the fake pipe ends
    loop = asyncio.get_running_loop()
    oversized, next_one = loop.create_future(), loop.create_future()
    instance._pending = {1: oversized, 2: next_one}
    process = FakeProcess()
    reader = asyncio.create_task(instance._read_results(process))  # type: ignore[arg-type]
    size = LIMIT + FRAME_OVERHEAD + 1
    frame = result_frame(1, b"x" * size)
    for start in range(0, len(frame), 65536):  # fed as a pipe would, never buffered whole
        process.stdout.feed_data(frame[start : start + 65536])
        await asyncio.sleep(0)
        assert len(process.stdout._buffer) <= 2 * 65536 + 2**20  # type: ignore[attr-defined]
    process.stdout.feed_data(result_frame(2, b"fits"))
    process.stdout.feed_eof()
    await reader
    with pytest.raises(ModelInvocationError) as failure:
        oversized.result()
    assert "over the maximum model response size of 1048576 bytes" in failure.value.message
    assert next_one.result().body == b"fits"
