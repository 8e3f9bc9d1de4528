"""The autoscaler and the backlog sampler are fleet singletons: one worker acts at a
time, and another takes over when it stops renewing its lease. GET /metrics outside
loopback needs a bearer token."""

from __future__ import annotations

import pytest

from sagequeue.autoscaling.autoscaler import Autoscaler
from sagequeue.dispatch.membership import Membership
from sagequeue.domain.metrics import MetricClock
from sagequeue.frontdoor.http import Request
from sagequeue.frontdoor.prometheus import PrometheusEndpoint
from sagequeue.frontdoor.sigv4 import SigV4Verifier
from sagequeue.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def member(store: MemoryStore, clock: FakeClock) -> Membership:
    async def lost() -> None:
        pass

    membership = Membership(
        store, clock, max_instances=None, endpoints=[], timeout=TIMEOUT, on_lost=lost
    )
    await membership.register()
    return membership


async def test_one_autoscaler_acts_and_another_takes_over_when_it_dies() -> None:
    store, clock = MemoryStore(), FakeClock()
    first = Autoscaler(store, await member(store, clock), MetricClock(), clock)
    second = Autoscaler(store, await member(store, clock), MetricClock(), clock)
    assert await first.tick()
    assert not await second.tick()
    clock.t += TIMEOUT / 2
    assert await first.tick()  # renews
    assert not await second.tick()
    clock.t += TIMEOUT + 1  # the first stops ticking (its process died)
    assert await second.tick()
    assert not await first.tick()


def metrics_request(client_host: str, authorization: str | None = None) -> Request:
    headers = {"host": "example"}
    if authorization is not None:
        headers["authorization"] = authorization

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    return Request(
        method="GET",
        path="/metrics",
        raw_path="/metrics",
        query_string="",
        headers=headers,
        request_id="r",
        receive=receive,
        client_host=client_host,
    )


@pytest.mark.parametrize(
    ("client_host", "authorization", "status"),
    [
        ("127.0.0.1", None, 200),
        ("::1", None, 200),
        ("10.1.2.3", None, 401),
        ("10.1.2.3", "Bearer wrong", 401),
        ("10.1.2.3", "Bearer s3cret", 200),
    ],
)
async def test_metrics_outside_loopback_need_the_bearer_token(
    client_host, authorization, status
) -> None:
    store = MemoryStore()
    endpoint = PrometheusEndpoint(lambda: store, SigV4Verifier({}), {}, "s3cret")
    response = await endpoint(metrics_request(client_host, authorization))
    assert response.status == status
