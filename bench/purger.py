"""``python -m bench.purger URL``: the retention purge as a process of its own, deleting
finished invocations until SIGTERM with the worker's own batches and pacing
(``sagequeue.dispatch.sweeper.purge_paced``), as a fleet's retention singleton would;
prints how many rows it deleted. The bench measures ingest and leasing beside it."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

from sagequeue.dispatch.sweeper import PURGE_RUN_SECONDS, purge_paced
from sagequeue.dispatch.worker import SWEEP_SECONDS
from sagequeue.stores import open_store


async def purge(url: str, older_than: float) -> int:
    store = await open_store(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    purged = 0

    async def purge_batch(limit: int) -> int:
        nonlocal purged
        if stop.is_set():
            return 0  # a short batch ends purge_paced
        deleted = await store.purge_finished(time.time() - older_than, limit)
        purged += deleted
        return deleted

    print("purging", flush=True)
    try:
        while not stop.is_set():
            # As the worker's sweeper does: a bounded run, then the next sweep.
            await purge_paced(purge_batch, PURGE_RUN_SECONDS)
            try:
                await asyncio.wait_for(stop.wait(), SWEEP_SECONDS)
            except TimeoutError:
                pass
    finally:
        await store.close()
    return purged


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.purger")
    parser.add_argument("url", help="sqlite:///path or postgresql://...")
    parser.add_argument("--older-than", type=float, default=7 * 86400, help="retention, s")
    args = parser.parse_args()
    purged = asyncio.run(purge(args.url, args.older_than))
    print(f"purged {purged}", flush=True)


if __name__ == "__main__":
    main()
