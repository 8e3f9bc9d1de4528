"""The built-in Python runtime: each model instance is its own OS process running
``sagequeue.runtimes.python_worker``, fed through length-prefixed frames on its pipes.

The process's stdin and stdout carry the frames; everything the model prints (its
stdout is pointed at its stderr) comes through a third pipe, line by line, to the
instance's log (``InstanceLog``: the endpoint's CloudWatch-style log stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from sagequeue.config import DEFAULT_MAX_MODEL_RESPONSE_BYTES
from sagequeue.ports import (
    InstanceLog,
    ModelInvocationError,
    ModelRequest,
    ModelResponse,
    ObjectStore,
)
from sagequeue.runtimes.frames import CHUNK_SIZE, HEADER, FrameKind, encode_frame
from sagequeue.runtimes.limits import header_value_or_none, response_too_large
from sagequeue.runtimes.model_archive import fetch_model_archive

log = logging.getLogger("sagequeue.runtimes.python")

# Paths a SageMaker framework container uses, mapped onto the extracted model directory.
_CONTAINER_MODEL_DIR = "/opt/ml/model"
LOAD_TIMEOUT_SECONDS = 300.0
# After an invocation timed out, how long its handler may still take before the
# instance process is restarted (a thread cannot be stopped any other way).
TIMEOUT_GRACE_SECONDS = 5.0
RESTART_BACKOFF_SECONDS = 1.0
# Room in a RESULT frame beyond the response body: its length prefix and JSON metadata
# (content type, custom attributes).
FRAME_OVERHEAD = 64 * 1024
# What is kept of an ERROR frame that is too large (the rest is read and dropped).
MAX_ERROR_MESSAGE = 64 * 1024
# A line the model prints is cut in pieces this long (a line without an end is not
# held back longer than that).
MAX_OUTPUT_LINE = 64 * 1024
# The model's last lines, kept to tell why it could not load.
OUTPUT_TAIL_LINES = 20
# How long the model's last output is waited for once its process ended.
OUTPUT_DRAIN_SECONDS = 2.0


class InstanceCrashed(ModelInvocationError):
    """The instance process died while running the invocation; the invocation may be
    retried on a restarted instance."""


@dataclass(slots=True)
class LaunchSpec:
    """How to start one Python model instance process."""

    model_dir: Path
    code_dir: Path
    program: str
    environment: dict[str, str] = field(default_factory=dict)


def _container_of(model: dict[str, Any]) -> dict[str, Any]:
    container = model.get("PrimaryContainer")
    if not container and model.get("Containers"):
        container = model["Containers"][0]
    return container or {}


class PythonRuntime:
    """``ModelRuntime`` for ``sagequeue/python`` and SageMaker framework images."""

    def __init__(
        self,
        objects: ObjectStore,
        data_dir: Path,
        *,
        max_response_bytes: int = DEFAULT_MAX_MODEL_RESPONSE_BYTES,
    ) -> None:
        self._objects = objects
        self._models_root = data_dir.absolute() / "models"
        self._max_response_bytes = max_response_bytes

    async def start_instance(
        self, model: dict[str, Any], max_concurrency: int, *, log: InstanceLog | None = None
    ) -> PythonInstance:
        spec = await self.prepare(model)
        instance = PythonInstance(spec, max_concurrency, self._max_response_bytes, log=log)
        await instance.start()
        return instance

    async def prepare(self, model: dict[str, Any]) -> LaunchSpec:
        """Download and extract the model, and find its handler module."""
        container = _container_of(model)
        environment = {str(k): str(v) for k, v in (container.get("Environment") or {}).items()}
        url = container.get("ModelDataUrl")
        if not url:
            raise ModelInvocationError(
                "the built-in Python runtime needs PrimaryContainer.ModelDataUrl "
                "(an s3:// model.tar.gz)"
            )
        model_dir = await fetch_model_archive(self._objects, url, self._models_root)
        code_dir = model_dir / "code"
        submit_dir = environment.get("SAGEMAKER_SUBMIT_DIRECTORY")
        if submit_dir and submit_dir.startswith("s3://"):
            code_dir = await fetch_model_archive(self._objects, submit_dir, self._models_root)
        elif submit_dir and submit_dir.startswith(_CONTAINER_MODEL_DIR):
            code_dir = model_dir / submit_dir[len(_CONTAINER_MODEL_DIR) :].lstrip("/")
        program = environment.get("SAGEMAKER_PROGRAM") or "inference.py"
        if not (code_dir / program).is_file():
            raise ModelInvocationError(
                f"{url} holds no code/{program}: the built-in Python runtime needs "
                "code/inference.py (or the file named by SAGEMAKER_PROGRAM) with the "
                "handler functions"
            )
        return LaunchSpec(model_dir, code_dir, program, environment)


class PythonInstance:
    """One model instance process; restarts it when it dies."""

    def __init__(
        self,
        spec: LaunchSpec,
        max_concurrency: int,
        max_response_bytes: int = DEFAULT_MAX_MODEL_RESPONSE_BYTES,
        *,
        log: InstanceLog | None = None,
    ) -> None:
        self.spec = spec
        self._log = log
        self._output_task: asyncio.Task[None] | None = None
        self._output_tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self.max_concurrency = max(1, max_concurrency)
        self.max_response_bytes = max_response_bytes
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self._numbers = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ModelResponse]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._reader_task: asyncio.Task[None] | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self.restarts = 0
        self._watchdogs: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the process and wait until the model loaded; ModelInvocationError if not."""
        env = {**os.environ, **self.spec.environment, "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sagequeue.runtimes.python_worker",
            "--model-dir",
            str(self.spec.model_dir),
            "--code-dir",
            str(self.spec.code_dir),
            "--program",
            self.spec.program,
            "--max-concurrency",
            str(self.max_concurrency),
            "--max-response-bytes",
            str(self.max_response_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(self.spec.model_dir),
            limit=2**20,
            # Its own session: a terminal's Ctrl-C or a group kill reaches the server,
            # which then shuts the instance down in order (it also exits on stdin EOF).
            start_new_session=True,
        )
        assert process.stdout is not None and process.stderr is not None
        self._output_tail.clear()
        self._output_task = asyncio.create_task(self._forward_output(process.stderr))
        try:
            kind, _, payload = await asyncio.wait_for(
                _read_frame(process.stdout), LOAD_TIMEOUT_SECONDS
            )
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            await _kill(process)
            await self._drain_output()
            last = self._output_tail[-1] if self._output_tail else ""
            raise ModelInvocationError(
                f"the model instance process exited while loading the model "
                f"(exit code {process.returncode})"
                + (f": {last}" if last else "")
                + "; see the instance's log stream"
            ) from None
        if kind is not FrameKind.READY:
            await _kill(process)
            await self._drain_output()
            reason = payload.decode("utf-8", "replace") if kind is FrameKind.LOAD_ERROR else ""
            raise ModelInvocationError(f"The model could not be loaded: {reason}")
        self._process = process
        self._ready.set()
        self._reader_task = asyncio.create_task(self._read_results(process))

    async def invoke(self, request: ModelRequest, timeout: float) -> ModelResponse:
        async with self._slots:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            number = next(self._numbers)
            future: asyncio.Future[ModelResponse] = loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._ready.wait()
                    process = self._process
                    if process is None or self._closing:
                        raise InstanceCrashed("the model instance is shut down")
                    self._pending[number] = future
                    await self._send(process, number, request)
                    return await asyncio.shield(future)
            except TimeoutError:
                if not future.done() and number in self._pending:
                    # Keep it pending: a handler that never returns gets its process killed.
                    watchdog = asyncio.create_task(self._kill_if_stuck(number, future))
                    self._watchdogs.add(watchdog)
                    watchdog.add_done_callback(self._watchdogs.discard)
                raise
            except (ConnectionError, BrokenPipeError) as exc:
                self._pending.pop(number, None)
                raise InstanceCrashed(f"the model instance process died: {exc}") from None
            except BaseException:
                self._pending.pop(number, None)
                raise
            finally:
                if future.done():
                    self._pending.pop(number, None)

    async def healthy(self) -> bool:
        process = self._process
        if process is None or process.returncode is not None or not self._ready.is_set():
            return False
        number = next(self._numbers)
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[number] = pong
        try:
            assert process.stdin is not None
            process.stdin.write(encode_frame(FrameKind.PING, number))
            await asyncio.wait_for(pong, 5.0)
            return True
        except (TimeoutError, ConnectionError):
            return False
        finally:
            self._pongs.pop(number, None)

    async def close(self) -> None:
        self._closing = True
        self._ready.clear()
        if self._restart_task is not None:
            self._restart_task.cancel()
        process = self._process
        if process is not None:
            with contextlib.suppress(Exception):
                assert process.stdin is not None
                process.stdin.close()  # the instance exits on EOF
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                await _kill(process)
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        await self._drain_output()
        self._fail_pending("the model instance was shut down")

    # ---------------------------------------------------------------- the model's output
    async def _forward_output(self, stream: asyncio.StreamReader) -> None:
        """Every line the process prints, to the instance's log, until its pipe closes."""
        pending = b""
        while True:
            try:
                chunk = await stream.read(MAX_OUTPUT_LINE)
            except (ConnectionError, ValueError):
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._output_line(line)
            while len(pending) >= MAX_OUTPUT_LINE:
                self._output_line(pending[:MAX_OUTPUT_LINE])
                pending = pending[MAX_OUTPUT_LINE:]
        if pending:
            self._output_line(pending)

    def _output_line(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        self._output_tail.append(line)
        if self._log is None:
            sys.stderr.write(line + "\n")
            return
        try:
            self._log.model_output(line)
        except Exception:  # a log sink's failure must not stop the model's pipe
            log.exception("forwarding a model output line failed")

    async def _drain_output(self) -> None:
        """Let the output of a process that ended reach the log (what it printed last,
        a traceback, often says why it ended)."""
        task = self._output_task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=OUTPUT_DRAIN_SECONDS)
            if not task.done():
                task.cancel()

    def _note(self, line: str) -> None:
        if self._log is not None:
            self._log.platform(line)

    # ---------------------------------------------------------------- internals
    async def _send(
        self, process: asyncio.subprocess.Process, number: int, request: ModelRequest
    ) -> None:
        stdin = process.stdin
        assert stdin is not None
        meta = msgspec.json.encode(
            {
                "inference_id": request.inference_id,
                "content_type": request.content_type,
                "accept": request.accept,
                "custom_attributes": request.custom_attributes,
            }
        )
        stdin.write(encode_frame(FrameKind.START, number, meta))
        async for chunk in _chunks(request.body):
            # One frame at a time with drain: the server holds at most one chunk.
            stdin.write(encode_frame(FrameKind.DATA, number, chunk))
            await stdin.drain()
        stdin.write(encode_frame(FrameKind.END, number))
        await stdin.drain()

    async def _read_results(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        largest_frame = self.max_response_bytes + FRAME_OVERHEAD
        try:
            while True:
                kind, number, length = _parse_header(await process.stdout.readexactly(HEADER.size))
                if length > largest_frame:
                    # The instance checks the size itself; this holds if it does not:
                    # the frame is read and dropped, never held.
                    kept = await _drop_frame(process.stdout, length, MAX_ERROR_MESSAGE)
                    future = self._pending.pop(number, None)
                    if future is not None and not future.done():
                        future.set_exception(
                            response_too_large(length - FRAME_OVERHEAD, self.max_response_bytes)
                            if kind is FrameKind.RESULT
                            else ModelInvocationError(kept.decode("utf-8", "replace"))
                        )
                    continue
                payload = await process.stdout.readexactly(length) if length else b""
                if kind is FrameKind.PONG:
                    pong = self._pongs.get(number)
                    if pong is not None and not pong.done():
                        pong.set_result(None)
                    continue
                future = self._pending.pop(number, None)
                if future is None or future.done():
                    continue  # an invocation that already timed out
                if kind is FrameKind.RESULT:
                    meta_length = int.from_bytes(payload[:4], "big")
                    meta = msgspec.json.decode(payload[4 : 4 + meta_length])
                    future.set_result(
                        ModelResponse(
                            body=payload[4 + meta_length :],
                            content_type=header_value_or_none(meta.get("content_type")),
                            custom_attributes=header_value_or_none(meta.get("custom_attributes")),
                        )
                    )
                elif kind is FrameKind.ERROR:
                    future.set_exception(ModelInvocationError(payload.decode("utf-8", "replace")))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ValueError:  # not a frame: the channel is out of step, start afresh
            log.error("model instance pid %s wrote a malformed frame; restarting", process.pid)
            await _kill(process)
        returncode = await process.wait()
        self._ready.clear()
        await self._drain_output()
        self._fail_pending(
            f"the model instance process exited with code {returncode}{_signal_name(returncode)}"
        )
        if not self._closing:
            log.warning("model instance pid %s exited with %s; restarting", process.pid, returncode)
            self._note(
                f"The model instance process (pid {process.pid}) exited with code "
                f"{returncode}{_signal_name(returncode)}; restarting it"
            )
            self._restart_task = asyncio.create_task(self._restart())

    def _fail_pending(self, message: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(InstanceCrashed(message))

    async def _restart(self) -> None:
        while not self._closing:
            try:
                await self.start()
                self.restarts += 1
                self._note(f"The model instance process restarted (pid {self.pid})")
                return
            except ModelInvocationError as exc:
                log.error("restarting the model instance failed: %s", exc.message)
                self._note(f"Restarting the model instance failed: {exc.message}")
                await asyncio.sleep(RESTART_BACKOFF_SECONDS)

    async def _kill_if_stuck(self, number: int, future: asyncio.Future[ModelResponse]) -> None:
        await asyncio.sleep(TIMEOUT_GRACE_SECONDS)
        if number in self._pending and not future.done() and self._process is not None:
            log.warning("a timed-out handler did not return; restarting the model instance")
            await _kill(self._process)
        self._pending.pop(number, None)


async def _chunks(body: bytes | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, bytes | bytearray | memoryview):
        view = memoryview(body)
        for start in range(0, len(view), CHUNK_SIZE):
            yield bytes(view[start : start + CHUNK_SIZE])
        return
    async for chunk in body:
        for start in range(0, len(chunk), CHUNK_SIZE):
            yield chunk[start : start + CHUNK_SIZE]


async def _read_frame(stream: asyncio.StreamReader) -> tuple[FrameKind, int, bytes]:
    kind, number, length = _parse_header(await stream.readexactly(HEADER.size))
    payload = await stream.readexactly(length) if length else b""
    return kind, number, payload


def _parse_header(header: bytes) -> tuple[FrameKind, int, int]:
    """(kind, request number, payload length); ValueError for an unknown kind."""
    kind, number, length = HEADER.unpack(header)
    return FrameKind(kind), number, length


async def _drop_frame(stream: asyncio.StreamReader, length: int, keep: int) -> bytes:
    """Read a frame's payload of ``length`` bytes, keeping only its first ``keep``."""
    kept = await stream.readexactly(min(length, keep))
    remaining = length - len(kept)
    while remaining:
        remaining -= len(await stream.readexactly(min(remaining, CHUNK_SIZE)))
    return kept


def _signal_name(returncode: int | None) -> str:
    if returncode is None or returncode >= 0:
        return ""
    import signal

    try:
        return f" ({signal.Signals(-returncode).name})"
    except ValueError:
        return ""


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    with contextlib.suppress(Exception):
        await process.wait()
