"""The doorbell's ringing side: datagrams to every worker socket of the data dir."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from sagequeue.dispatch.doorbell import Doorbell, doorbell_dir

pytestmark = pytest.mark.anyio


def listening_worker(data_dir: Path, name: str = "4242") -> socket.socket:
    directory = doorbell_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / f"{name}.sock"))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(256).decode())
        except BlockingIOError:
            return messages


async def test_rings_of_one_loop_turn_send_one_datagram_per_endpoint(tmp_path: Path) -> None:
    worker = listening_worker(tmp_path)
    bell = Doorbell(tmp_path)
    for _ in range(10):
        bell.ring("a")
        bell.ring("b")
    assert received(worker) == []  # sent at the end of the turn, not per ring
    await asyncio.sleep(0)
    assert sorted(received(worker)) == ["a", "b"]
    bell.ring("a")
    await asyncio.sleep(0)
    assert received(worker) == ["a"]  # a later turn rings again
    bell.close()
    worker.close()


def test_ring_without_an_event_loop_is_sent_at_once(tmp_path: Path) -> None:
    worker = listening_worker(tmp_path)
    bell = Doorbell(tmp_path)
    bell.ring("a")
    assert received(worker) == ["a"]
    bell.close()
    worker.close()


async def test_ring_to_a_worker_that_is_gone_forgets_its_socket(tmp_path: Path) -> None:
    gone = listening_worker(tmp_path, "1")
    gone.close()  # the socket file stays, nobody listens
    bell = Doorbell(tmp_path)
    bell.ring("a")
    await asyncio.sleep(0)
    assert not (doorbell_dir(tmp_path) / "1.sock").exists()
    bell.close()
