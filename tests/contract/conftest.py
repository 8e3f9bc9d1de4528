"""Backends for the queue + metadata store contract suite.

Every test in this directory runs once per backend. Adding a backend (PostgreSQL) is one
entry in ``BACKENDS``: a function that opens a new handle on the store under test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sagequeue.stores.memory import MemoryStore
from sagequeue.stores.sqlite import SqliteStore

Store = Any  # MemoryStore | SqliteStore | ...: anything implementing both store ports


@dataclass
class Backend:
    """A store under test. ``open()`` gives a new handle on the *same* stored data: for a
    database that is a new connection (another process would see the same), for the
    in-memory fake the one instance."""

    name: str
    durable: bool  # data survives close() + open() of a new handle
    opener: Callable[[], Awaitable[Store]]
    handles: list[Store] = field(default_factory=list)

    async def open(self) -> Store:
        store = await self.opener()
        self.handles.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.handles:
            await store.close()


def memory_backend(tmp_path: Path) -> Backend:
    shared = MemoryStore()

    async def opener() -> Store:
        return shared

    return Backend("memory", durable=False, opener=opener)


def sqlite_backend(tmp_path: Path) -> Backend:
    async def opener() -> Store:
        store = SqliteStore(tmp_path / "sagequeue.db")
        await store.open()
        return store

    return Backend("sqlite", durable=True, opener=opener)


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    under_test = BACKENDS[request.param](tmp_path)
    yield under_test
    await under_test.close_all()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()


@pytest.fixture
def durable_backend(backend: Backend) -> Backend:
    if not backend.durable:
        pytest.skip(f"the {backend.name} backend keeps nothing across a reopen")
    return backend
