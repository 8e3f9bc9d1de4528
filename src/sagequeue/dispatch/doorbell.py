"""Cross-process wake-up on one host (the WakeupChannel of the SQLite store): an API
process rings every worker process of the data dir after an enqueue committed, so
workers need not poll the shared database on the hot path.

Each worker binds a unix datagram socket ``<data-dir>/doorbells/<pid>.sock``; a ring is a
non-blocking ``sendto`` of the endpoint name to every socket there. Lost rings are
harmless: workers also poll. Other hosts cannot be reached this way: a fleet on several
hosts uses PostgreSQL, whose LISTEN/NOTIFY is its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("sagequeue.doorbell")

# How long the list of worker sockets is cached by a ringing process.
LISTING_TTL_SECONDS = 1.0
# Unix socket paths are limited to 107 bytes on Linux.
MAX_SOCKET_PATH = 107


def doorbell_dir(data_dir: Path) -> Path:
    return data_dir.absolute() / "doorbells"


class Doorbell:
    """The ringing side (front door processes)."""

    def __init__(self, data_dir: Path) -> None:
        self._dir = doorbell_dir(data_dir)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._targets: list[str] = []
        self._listed_at = -LISTING_TTL_SECONDS
        self._pending: set[str] = set()  # rung during this event-loop turn

    def ring(self, endpoint_name: str) -> None:
        """Wake every worker process for this endpoint. Rings made in one turn of the
        event loop go out together at its end: one datagram per endpoint and worker per
        turn, however many enqueues the turn's group commit settled (a datagram per
        request cost the front door 11% of its ingest rate with one worker listening)."""
        if endpoint_name in self._pending:
            return
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self._ring_pending)
            except RuntimeError:  # no event loop here: ring at once
                self._send(endpoint_name)
                return
        self._pending.add(endpoint_name)

    def _ring_pending(self) -> None:
        pending, self._pending = self._pending, set()
        for endpoint_name in pending:
            self._send(endpoint_name)

    def _send(self, endpoint_name: str) -> None:
        now = time.monotonic()
        if now - self._listed_at >= LISTING_TTL_SECONDS:
            self._targets = self._list()
            self._listed_at = now
        message = endpoint_name.encode("utf-8")
        for target in list(self._targets):
            try:
                self._sock.sendto(message, target)
            except (ConnectionRefusedError, FileNotFoundError):
                # The worker is gone: forget its socket (and remove the leftover file).
                self._targets.remove(target)
                with contextlib.suppress(OSError):
                    os.unlink(target)
            except (BlockingIOError, OSError):
                pass  # its buffer is full: it is awake anyway

    def _list(self) -> list[str]:
        try:
            return [str(path) for path in self._dir.glob("*.sock")]
        except OSError:
            return []

    def close(self) -> None:
        self._sock.close()


class DoorbellListener:
    """The listening side (worker processes): calls ``on_ring(endpoint_name)`` on the loop."""

    def __init__(self, data_dir: Path, on_ring: Callable[[str], None]) -> None:
        self._dir = doorbell_dir(data_dir)
        self._on_ring = on_ring
        self._sock: socket.socket | None = None
        self.path: Path | None = None

    def start(self) -> bool:
        """Bind and start listening; False when the socket cannot be made (then only
        polling wakes the worker)."""
        path = self._dir / f"{os.getpid()}.sock"
        if len(str(path).encode()) > MAX_SOCKET_PATH:
            log.warning("doorbell path %s is too long for a unix socket; polling only", path)
            return False
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a dead process that had our pid
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError as exc:
            log.warning("cannot bind doorbell %s (%s); polling only", path, exc)
            return False
        self._sock, self.path = sock, path
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._on_ring(data.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()


class DoorbellChannel:
    """``WakeupChannel`` over the data dir's doorbell sockets."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._bell: Doorbell | None = None
        self._listener: DoorbellListener | None = None

    def ring(self, endpoint_name: str) -> None:
        if self._bell is None:
            self._bell = Doorbell(self._data_dir)
        self._bell.ring(endpoint_name)

    async def listen(self, on_ring: Callable[[str], None]) -> None:
        self._listener = DoorbellListener(self._data_dir, on_ring)
        self._listener.start()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._bell is not None:
            self._bell.close()
            self._bell = None
