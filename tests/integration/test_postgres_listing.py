"""PostgresStore.list_invocations among many rows (the planner's choice with real
statistics, as tests/integration/test_postgres_store.py checks the hot queries): each
page reads the status index backwards, never the table in full nor a sort of it. The
contract itself is in tests/contract/test_invocation_listing.py; the console's browser
test lists a million rows on SQLite."""

from __future__ import annotations

import pytest

from sagequeue.ports import InvocationStatus
from sagequeue.stores import postgres as pg
from sagequeue.stores.postgres import PostgresStore

from .test_postgres_store import NOW, sql

pytestmark = pytest.mark.anyio
ROWS = 200_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_listing_pages_search_the_status_index_among_many_rows(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await sql(
            postgres_url,
            """
            INSERT INTO invocations (request_id, inference_id, endpoint_name, output_location,
                failure_location, request_ttl_seconds, invocation_timeout_seconds, status,
                enqueued_at, finished_at, expires_at, variant_name)
            SELECT 'r-' || i, 'r-' || i, 'ep', 's3://o', 's3://f', 60, 60,
                CASE WHEN i %% 1000 = 0 THEN 'Failed' ELSE 'Completed' END, %s, %s, %s,
                'AllTraffic'
            FROM generate_series(1, %s) AS i
            """,
            (NOW, NOW, NOW + 60, ROWS),
        )
        await sql(postgres_url, "ANALYZE invocations")
        statements = {
            "_LIST_BY_STATUS": (pg._LIST_BY_STATUS, ("ep", "Failed", pg._NO_SEQ_LIMIT, 50)),
            "_LIST_BY_SEQS": (
                pg._LIST_BY_SEQS,
                {"endpoint": "ep", "before": 100_000, "limit": 50},
            ),
        }
        for name, (statement, params) in statements.items():
            plan = "\n".join(
                row[0] for row in await sql(postgres_url, "EXPLAIN " + statement, params)
            )
            assert "Seq Scan" not in plan, (name, plan)
            assert "invocations_by_status" in plan, (name, plan)
        # The by-status page reads its index in order: no sort at all.
        plan = "\n".join(
            row[0]
            for row in await sql(
                postgres_url, "EXPLAIN " + pg._LIST_BY_STATUS, statements["_LIST_BY_STATUS"][1]
            )
        )
        assert "Sort" not in plan, plan

        newest = await store.list_invocations("ep", limit=3)
        assert [inv.inference_id for inv in newest] == ["r-200000", "r-199999", "r-199998"]
        failed = await store.list_invocations(
            "ep", status=InvocationStatus.FAILED, before_seq=newest[0].seq, limit=2
        )
        assert [inv.inference_id for inv in failed] == ["r-199000", "r-198000"]
    finally:
        await store.close()
