"""``sagequeue serve`` with durable enqueue taken out: a limit, not a product mode.

Every part of the real server runs (HTTP lane, SigV4, validation, endpoint lookup in
the SQLite store, doorbell, response) except that ``enqueue`` returns at once and keeps
nothing. Ingest against this server is the front door's own ceiling: how fast it can
go with the durable commit costing nothing.

Run: ``python -m bench.nostore serve --data-dir D --port P --role api`` (the
arguments of ``python -m sagequeue``).
"""

from __future__ import annotations

import sys
from typing import Any

import sagequeue.stores
from sagequeue.cli.main import main as sagequeue_main
from sagequeue.ports import Invocation

_open_store = sagequeue.stores.open_store


async def _enqueue_nowhere(invocation: Invocation) -> None:
    """Accept and forget. (The in-memory store would add a copy of every invocation,
    and a heap growing by hundreds of thousands of them, to what is measured.)"""


async def _open_store_without_durable_enqueue(url: str) -> Any:
    store = await _open_store(url)
    store.enqueue = _enqueue_nowhere  # the rest (endpoint documents) stays real
    return store


def main() -> int:
    sagequeue.stores.open_store = _open_store_without_durable_enqueue
    return sagequeue_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
