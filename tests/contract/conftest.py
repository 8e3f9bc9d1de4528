"""Backends for the queue + metadata + fleet store contract suite.

Every test in this directory runs once per backend: memory, SQLite and PostgreSQL (a
real server, ``postgres_server`` in tests/conftest.py). Adding a backend is one entry in
``BACKENDS``: a function that opens a new handle on the store under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sagequeue.stores.memory import MemoryStore
from sagequeue.stores.postgres import PostgresStore
from sagequeue.stores.sqlite import SqliteStore
from sagequeue.testing.postgres import PostgresServer

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


def memory_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    shared = MemoryStore()

    async def opener() -> Store:
        return shared

    return Backend("memory", durable=False, opener=opener)


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    async def opener() -> Store:
        store = SqliteStore(tmp_path / "sagequeue.db")
        await store.open()
        return store

    return Backend("sqlite", durable=True, opener=opener)


def postgres_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("postgres_contract_url")

    async def opener() -> Store:
        store = PostgresStore(url, lease_connections=4, durable_connections=2)
        await store.open()
        return store

    return Backend("postgres", durable=True, opener=opener)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
    "postgres": postgres_backend,
}

TEMPLATE_DATABASE = "sagequeue_contract_template"


@pytest.fixture(scope="session")
def postgres_contract_template(postgres_server: PostgresServer) -> str:
    """A database migrated once; each test gets a copy (a file copy: ~20 ms)."""
    url = postgres_server.create_database(TEMPLATE_DATABASE)

    async def migrate() -> None:
        store = PostgresStore(url)
        await store.open()
        await store.close()

    # Requested from inside the async backend fixture's event loop: migrate on another.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, migrate()).result()
    return TEMPLATE_DATABASE


@pytest.fixture
def postgres_contract_url(
    postgres_server: PostgresServer, postgres_contract_template: str
) -> Iterator[str]:
    url = postgres_server.create_database(template=postgres_contract_template)
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    under_test = BACKENDS[request.param](request, tmp_path)
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
