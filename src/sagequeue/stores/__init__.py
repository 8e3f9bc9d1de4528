"""Store adapters, chosen by URL: the queue + metadata store (``sqlite:///``, later
``postgresql://``) and the object store (``file:///``, ``s3://``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagequeue.config import ConfigError

if TYPE_CHECKING:
    from sagequeue.config import Settings
    from sagequeue.stores.objects import ObjectBackend
    from sagequeue.stores.sqlite import SqliteStore


async def open_store(url: str) -> SqliteStore:
    """The queue + metadata store for a database URL, opened."""
    if url.startswith("sqlite://"):
        from pathlib import Path

        from sagequeue.stores.sqlite import SqliteStore

        path = url.removeprefix("sqlite://")
        # sqlite:///abs/path -> /abs/path ; sqlite://rel/path -> rel/path
        store = SqliteStore(Path(path))
        await store.open()
        return store
    raise ConfigError(f"database URL {url!r}: supported schemes are sqlite:///path")


async def open_object_store(settings: Settings) -> ObjectBackend:
    """The object store for ``settings.object_store_url``, opened."""
    from sagequeue.stores.objects import open_object_backend

    return await open_object_backend(settings.object_store_url, settings)
