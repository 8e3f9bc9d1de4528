"""A Python model instance process: ``python -m sagequeue.runtimes.python_worker``.

Loads the model once, then serves invocations framed on stdin/stdout
(``sagequeue.runtimes.frames``) on up to ``--max-concurrency`` threads. The protocol uses
the original stdin/stdout descriptors; the handler's own prints go to stderr, so user
code cannot corrupt the frames, and the server forwards stderr to the instance's log
stream (with the traceback of a handler that raised, and faulthandler's of a process
that crashes). The process exits when stdin closes (server gone).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import tempfile
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import msgspec

from sagequeue.runtimes.frames import HEADER, FrameKind, encode_frame

SPOOL_IN_MEMORY = 64 * 1024 * 1024
# What an error message may carry back (the failure object); the rest is cut.
MAX_ERROR_MESSAGE = 64 * 1024


class _Channel:
    """Frame reader/writer over the protocol descriptors."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self._reader = reader
        self._writer = writer
        self._write_lock = threading.Lock()

    def read(self) -> tuple[FrameKind, int, bytes] | None:
        header = self._reader.read(HEADER.size)
        if len(header) < HEADER.size:
            return None
        kind, number, length = HEADER.unpack(header)
        payload = self._reader.read(length) if length else b""
        if len(payload) < length:
            return None
        return FrameKind(kind), number, payload

    def write(self, kind: FrameKind, number: int, payload: bytes = b"") -> None:
        frame = encode_frame(kind, number, payload)
        with self._write_lock:
            self._writer.write(frame)
            self._writer.flush()


def _take_protocol_descriptors() -> tuple[BinaryIO, BinaryIO]:
    """Keep stdin/stdout for frames; point fd 0 at /dev/null and fd 1 at stderr."""
    reader = os.fdopen(os.dup(0), "rb", buffering=1024 * 1024)
    writer = os.fdopen(os.dup(1), "wb", buffering=1024 * 1024)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return reader, writer


_OUR_CODE = str(Path(__file__).resolve().parent.parent)


def _user_frames(exc: BaseException) -> TracebackType | None:
    """The traceback from the first frame outside sagequeue (the model's code) on."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OUR_CODE):
        tb = tb.tb_next
    return tb or exc.__traceback__


def _run_one(
    channel: _Channel,
    handler: object,
    number: int,
    meta: dict[str, Any],
    body: bytes,
    max_response_bytes: int,
) -> None:
    from sagequeue.runtimes.limits import response_too_large
    from sagequeue.runtimes.toolkit import Context, describe_exception

    context = Context(
        str(handler.model_dir),  # type: ignore[attr-defined]
        inference_id=meta.get("inference_id"),
        content_type=meta.get("content_type"),
        accept=meta.get("accept"),
        custom_attributes=meta.get("custom_attributes"),
    )
    try:
        result, content_type, custom_attributes = handler.invoke(body, context)  # type: ignore[attr-defined]
    except Exception as exc:  # the user's handler: report it as the toolkit's 500 does
        # One write: a concurrent request's lines do not land in the middle of it.
        sys.stderr.write(
            f"Inference {meta.get('inference_id')} failed in the model handler:\n"
            + "".join(traceback.format_exception(type(exc), exc, _user_frames(exc)))
        )
        message = describe_exception(exc).encode("utf-8", "replace")[:MAX_ERROR_MESSAGE]
        channel.write(FrameKind.ERROR, number, message)
        return
    if len(result) > max_response_bytes:
        too_large = response_too_large(len(result), max_response_bytes)
        channel.write(FrameKind.ERROR, number, too_large.message.encode("utf-8"))
        return
    try:
        response_meta = msgspec.json.encode(
            {"content_type": _text_or_none(content_type), "custom_attributes": custom_attributes}
        )
    except (TypeError, ValueError) as exc:  # attributes that are not text
        reason = f"The handler's response cannot be sent: {describe_exception(exc)}"
        channel.write(FrameKind.ERROR, number, reason.encode("utf-8", "replace"))
        return
    channel.write(
        FrameKind.RESULT,
        number,
        len(response_meta).to_bytes(4, "big") + response_meta + result,
    )


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sagequeue.runtimes.python_worker")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--code-dir", required=True)
    parser.add_argument("--program", default="inference.py")
    parser.add_argument("--max-concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-response-bytes", type=int, default=1024**3)
    args = parser.parse_args(argv)
    reader, writer = _take_protocol_descriptors()
    channel = _Channel(reader, writer)
    # A crash in native code (a segfault, an abort) still leaves the Python stacks.
    faulthandler.enable(file=sys.stderr, all_threads=False)

    from sagequeue.runtimes.toolkit import Handler, ModelLoadError, describe_exception

    os.environ.setdefault("SAGEMAKER_BASE_DIR", str(Path(args.model_dir).parent))
    try:
        handler = Handler(Path(args.model_dir), Path(args.code_dir), args.program)
    except ModelLoadError as exc:
        channel.write(FrameKind.LOAD_ERROR, 0, str(exc).encode("utf-8"))
        return 1
    except Exception as exc:  # anything else while loading user code
        traceback.print_exc(file=sys.stderr)
        channel.write(FrameKind.LOAD_ERROR, 0, describe_exception(exc).encode("utf-8"))
        return 1
    channel.write(FrameKind.READY, 0)

    pool = ThreadPoolExecutor(max_workers=max(1, args.max_concurrency))
    # Bodies are spooled to a temporary file past 64 MiB, then read back in one piece:
    # a large input costs its size once, not twice.
    pending: dict[int, tuple[dict[str, Any], tempfile.SpooledTemporaryFile[bytes]]] = {}
    while True:
        frame = channel.read()
        if frame is None:  # the server closed our stdin: it is gone or wants us gone
            os._exit(0)
        kind, number, payload = frame
        if kind is FrameKind.START:
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
            pending[number] = (msgspec.json.decode(payload), spool)
        elif kind is FrameKind.DATA:
            entry = pending.get(number)
            if entry is not None:
                entry[1].write(payload)
        elif kind is FrameKind.END:
            entry = pending.pop(number, None)
            if entry is not None:
                meta, spool = entry
                spool.seek(0)
                body = spool.read()
                spool.close()
                pool.submit(_run_one, channel, handler, number, meta, body, args.max_response_bytes)
        elif kind is FrameKind.PING:
            channel.write(FrameKind.PONG, number)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the server went away: nothing left to answer
        os._exit(0)
