"""``python -m bench.purger URL``: the retention purge as a process of its own, deleting
finished invocations in batches until SIGTERM, as a fleet's retention singleton would;
prints how many rows it deleted. The bench measures ingest and leasing beside it."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

from sagequeue.stores import open_store


async def purge(url: str, batch: int, pause: float, older_than: float) -> int:
    store = await open_store(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    purged = 0
    print("purging", flush=True)
    try:
        while not stop.is_set():
            purged += await store.purge_finished(time.time() - older_than, batch)
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass
    finally:
        await store.close()
    return purged


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.purger")
    parser.add_argument("url", help="sqlite:///path or postgresql://...")
    parser.add_argument("--batch", type=int, default=1000, help="rows per purge call")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between calls")
    parser.add_argument("--older-than", type=float, default=7 * 86400, help="retention, s")
    args = parser.parse_args()
    purged = asyncio.run(purge(args.url, args.batch, args.pause, args.older_than))
    print(f"purged {purged}", flush=True)


if __name__ == "__main__":
    main()
