"""The retention purge's pacing: batches until a short one, at most a fifth of the time
spent deleting, and a bounded run per sweep."""

from __future__ import annotations

import asyncio
import time

from sagequeue.dispatch import sweeper
from sagequeue.dispatch.sweeper import PURGE_BATCH, PURGE_DUTY, purge_paced


class Rows:
    """A table of ``count`` purgeable rows whose deletes take ``seconds`` a batch."""

    def __init__(self, count: int, seconds: float = 0.0) -> None:
        self.count = count
        self.seconds = seconds
        self.busy = 0.0

    async def purge(self, limit: int) -> int:
        started = time.monotonic()
        await asyncio.sleep(self.seconds)
        self.busy += time.monotonic() - started
        deleted = min(limit, self.count)
        self.count -= deleted
        return deleted


def test_purges_every_row_and_says_it_finished() -> None:
    rows = Rows(PURGE_BATCH * 3 + 7)
    purged, finished = asyncio.run(purge_paced(rows.purge))
    assert (purged, finished, rows.count) == (PURGE_BATCH * 3 + 7, True, 0)


def test_deleting_takes_at_most_the_duty_share_of_the_time() -> None:
    rows = Rows(PURGE_BATCH * 4, seconds=0.05)
    started = time.monotonic()
    asyncio.run(purge_paced(rows.purge))
    # Five batches (the last one short); the pause follows each full one.
    assert rows.busy / (time.monotonic() - started) <= PURGE_DUTY + 0.05


def test_a_run_stops_after_its_time_and_says_more_is_left(monkeypatch) -> None:
    monkeypatch.setattr(sweeper, "PURGE_PAUSE_SECONDS", 0.01)
    rows = Rows(PURGE_BATCH * 1000)
    started = time.monotonic()
    purged, finished = asyncio.run(purge_paced(rows.purge, run_seconds=0.2))
    assert not finished
    assert 0 < purged < PURGE_BATCH * 1000
    assert time.monotonic() - started < 1.0
