"""Store adapters, chosen by URL: the queue + metadata store (``sqlite:///``,
``postgresql://``) and the object store (``file:///``, ``s3://``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sagequeue.config import ConfigError

if TYPE_CHECKING:
    from sagequeue.config import Settings
    from sagequeue.ports import WakeupChannel
    from sagequeue.stores.objects import ObjectBackend
    from sagequeue.stores.postgres import PostgresStore
    from sagequeue.stores.postgres_wakeups import PostgresChangeNotices
    from sagequeue.stores.sqlite import SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


async def open_store(url: str) -> SqliteStore | PostgresStore:
    """The queue + metadata + fleet store for a database URL, opened. Raises a
    StartupError (one line, no traceback at start) when the URL is malformed or the
    database cannot be used."""
    if url.startswith("sqlite://"):
        from pathlib import Path

        from sagequeue.stores.sqlite import SqliteStore

        path = url.removeprefix("sqlite://")
        # sqlite:///abs/path -> /abs/path ; sqlite://rel/path -> rel/path
        store = SqliteStore(Path(path))
        await store.open()
        return store
    if url.startswith(POSTGRES_SCHEMES):
        from sagequeue.stores.postgres import PostgresStore

        pg_store = PostgresStore(url)
        await pg_store.open()
        return pg_store
    raise _unsupported(url)


def _unsupported(url: str) -> ConfigError:
    shown = re.sub(r"(//[^:/@\s]*:)[^@\s]*@", r"\1***@", url)  # no password in messages
    return ConfigError(
        f"database URL {shown!r}: supported schemes are sqlite:///path and "
        "postgresql://user:password@host:5432/database"
    )


async def prepare_database(url: str) -> None:
    """Before a server starts: check a PostgreSQL URL, connect, and bring the schema up
    to date, so that a bad URL, an unreachable database or a schema newer than this code
    stops the start with a StartupError (one line) before anything listens."""
    if url.startswith(POSTGRES_SCHEMES):
        from sagequeue.stores.postgres import check_url, migrate

        check_url(url)
        await migrate(url)
    elif url.startswith("sqlite://"):
        store = await open_store(url)  # creates or migrates the schema
        await store.close()
    else:
        raise _unsupported(url)


def open_wakeups(settings: Settings, store: object) -> WakeupChannel | None:
    """The channel that wakes worker processes after an enqueue, for this store: on
    PostgreSQL, LISTEN/NOTIFY (reaches every host; the store notifies in the enqueue's
    own commit). None for SQLite, whose workers on this host are woken by the local
    doorbell (``sagequeue.dispatch.doorbell``). Not yet listening: call ``listen``."""
    import sys

    # A PostgresStore exists only if its module was imported (psycopg loads slowly).
    postgres = sys.modules.get("sagequeue.stores.postgres")
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        from sagequeue.stores.postgres_wakeups import PostgresWakeups

        return PostgresWakeups(store.url)
    return None


async def open_object_store(settings: Settings) -> ObjectBackend:
    """The object store for ``settings.object_store_url``, opened."""
    from sagequeue.stores.objects import open_object_backend

    return await open_object_backend(settings.object_store_url, settings)


def open_change_notices(store: object) -> PostgresChangeNotices | None:
    """Change notices of invocations for event feeds (LISTEN/NOTIFY on PostgreSQL); None
    for SQLite, whose feeds poll the store. Not yet listening: call ``start``."""
    import sys

    postgres = sys.modules.get("sagequeue.stores.postgres")
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        from sagequeue.stores.postgres_wakeups import PostgresChangeNotices

        return PostgresChangeNotices(store.url)
    return None
