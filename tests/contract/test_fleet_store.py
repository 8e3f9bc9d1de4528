"""FleetStore contract: workers with heartbeats, instance claims, singleton leases.
Every backend must behave exactly like this."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sagequeue.ports import InstanceClaim, InstanceState, InvocationStatus, WorkerRecord

from .conftest import Backend, Store
from .test_queue_store import LEASE_SECONDS, NOW, enqueue_all, invocation

pytestmark = pytest.mark.anyio

HEARTBEAT_TTL = 10.0


def worker(name: str | None = None, **fields) -> WorkerRecord:
    fields.setdefault("max_instances", 2)
    fields.setdefault("started_at", NOW)
    fields.setdefault("heartbeat_at", NOW)
    fields.setdefault("heartbeat_expires_at", NOW + HEARTBEAT_TTL)
    return WorkerRecord(
        worker_id=name or f"w-{uuid.uuid4().hex[:8]}", host="host-a", pid=1234, **fields
    )


def claim(worker_id: str, slot: int = 0, **fields) -> InstanceClaim:
    fields.setdefault("endpoint_name", "ep")
    fields.setdefault("variant_name", "AllTraffic")
    fields.setdefault("generation", 1)
    fields.setdefault("claimed_at", NOW)
    fields.setdefault("updated_at", NOW)
    return InstanceClaim(slot=slot, worker_id=worker_id, **fields)


# ------------------------------------------------------------------------- workers


async def test_registered_worker_is_listed_with_every_field(store: Store) -> None:
    sent = worker("w1", endpoints=("gpu-a", "gpu-b"), max_instances=4)
    await store.register_worker(sent)
    assert await store.list_workers() == [sent]


async def test_worker_serving_every_endpoint_has_no_endpoint_list(store: Store) -> None:
    await store.register_worker(worker("w1"))
    (listed,) = await store.list_workers()
    assert listed.endpoints == ()


async def test_heartbeat_extends_the_registration(store: Store) -> None:
    await store.register_worker(worker("w1"))
    assert await store.heartbeat("w1", NOW + 5, NOW + 15)
    (listed,) = await store.list_workers()
    assert (listed.heartbeat_at, listed.heartbeat_expires_at) == (NOW + 5, NOW + 15)


async def test_heartbeat_of_an_unknown_worker_says_it_is_gone(store: Store) -> None:
    assert not await store.heartbeat("nobody", NOW, NOW + 10)


async def test_reap_removes_only_workers_whose_heartbeat_lapsed(store: Store) -> None:
    await store.register_worker(worker("old", heartbeat_expires_at=NOW + 1))
    await store.register_worker(worker("fresh", heartbeat_expires_at=NOW + 20))
    assert await store.reap_workers(NOW + 5) == ["old"]
    assert [w.worker_id for w in await store.list_workers()] == ["fresh"]
    assert not await store.heartbeat("old", NOW + 6, NOW + 16)


async def test_reap_frees_the_dead_workers_instances(store: Store) -> None:
    await store.register_worker(worker("dead", heartbeat_expires_at=NOW + 1))
    await store.register_worker(worker("alive", heartbeat_expires_at=NOW + 20))
    assert await store.claim_instance(claim("dead", 0))
    assert await store.claim_instance(claim("alive", 1))
    await store.reap_workers(NOW + 5)
    assert [(c.slot, c.worker_id) for c in await store.list_instances("ep")] == [(1, "alive")]
    assert await store.claim_instance(claim("alive", 0))


async def test_reap_requeues_the_dead_workers_invocations_keeping_attempts(
    store: Store,
) -> None:
    await store.register_worker(worker("dead", heartbeat_expires_at=NOW + 1))
    await store.register_worker(worker("alive", heartbeat_expires_at=NOW + 20))
    mine, theirs = await enqueue_all(store, invocation(), invocation())
    await store.lease("ep", "dead", 1, LEASE_SECONDS, NOW)
    await store.lease("ep", "alive", 1, LEASE_SECONDS, NOW)
    await store.reap_workers(NOW + 5)
    requeued = await store.get("ep", mine.inference_id)
    assert requeued.status == InvocationStatus.QUEUED and requeued.attempts == 1
    assert requeued.lease_owner is None
    kept = await store.get("ep", theirs.inference_id)
    assert kept.status == InvocationStatus.IN_PROGRESS and kept.lease_owner == "alive"


async def test_reaped_worker_cannot_finish_what_was_leased_again_elsewhere(
    store: Store,
) -> None:
    await store.register_worker(worker("paused", heartbeat_expires_at=NOW + 1))
    (inv,) = await enqueue_all(store, invocation())
    await store.lease("ep", "paused", 1, LEASE_SECONDS, NOW)
    await store.reap_workers(NOW + 5)
    await store.lease("ep", "other", 1, LEASE_SECONDS, NOW + 5)
    assert not await store.finish(inv.request_id, "paused", InvocationStatus.COMPLETED, None, NOW)
    assert await store.finish(inv.request_id, "other", InvocationStatus.COMPLETED, None, NOW)


async def test_removed_worker_leaves_no_row_and_no_instances(store: Store) -> None:
    await store.register_worker(worker("w1"))
    await store.claim_instance(claim("w1"))
    await store.remove_worker("w1")
    assert await store.list_workers() == []
    assert await store.list_instances() == []


# ------------------------------------------------------------------------- instances


async def test_claimed_instance_is_listed_with_every_field(store: Store) -> None:
    await store.register_worker(worker("w1"))
    sent = claim("w1", 3, generation=7, variant_name="Blue")
    assert await store.claim_instance(sent)
    assert await store.list_instances("ep") == [sent]


async def test_an_instance_is_claimed_by_one_worker_only(store: Store) -> None:
    await store.register_worker(worker("w1"))
    await store.register_worker(worker("w2"))
    assert await store.claim_instance(claim("w1", 0))
    assert not await store.claim_instance(claim("w2", 0))
    assert [c.worker_id for c in await store.list_instances("ep")] == ["w1"]


async def test_concurrent_claims_on_separate_handles_have_one_winner(backend: Backend) -> None:
    handles = [await backend.open() for _ in range(3)]
    names = [f"w{n}" for n in range(len(handles))]
    for name in names:
        await handles[0].register_worker(worker(name))
    for _ in range(20):
        results = await asyncio.gather(
            *(h.claim_instance(claim(n, 0)) for h, n in zip(handles, names, strict=True))
        )
        assert sum(results) == 1
        (owner,) = await handles[0].list_instances("ep")
        await handles[0].release_instance(owner)


async def test_an_unregistered_worker_cannot_claim(store: Store) -> None:
    assert not await store.claim_instance(claim("ghost"))
    assert await store.list_instances() == []


async def test_instances_of_another_generation_or_variant_are_separate(store: Store) -> None:
    await store.register_worker(worker("w1"))
    assert await store.claim_instance(claim("w1", 0, generation=1))
    assert await store.claim_instance(claim("w1", 0, generation=2))
    assert await store.claim_instance(claim("w1", 0, variant_name="Green"))
    assert len(await store.list_instances("ep")) == 3


async def test_endpoint_names_of_instances_ignore_case(store: Store) -> None:
    await store.register_worker(worker("w1"))
    assert await store.claim_instance(claim("w1", endpoint_name="MyEndpoint"))
    assert not await store.claim_instance(claim("w1", endpoint_name="myendpoint"))
    (listed,) = await store.list_instances("MYENDPOINT")
    assert listed.endpoint_name == "myendpoint"


async def test_list_instances_without_an_endpoint_lists_all(store: Store) -> None:
    await store.register_worker(worker("w1"))
    await store.claim_instance(claim("w1", endpoint_name="a"))
    await store.claim_instance(claim("w1", endpoint_name="b"))
    assert [c.endpoint_name for c in await store.list_instances()] == ["a", "b"]


async def test_owner_sets_the_instance_state(store: Store) -> None:
    await store.register_worker(worker("w1"))
    mine = claim("w1")
    await store.claim_instance(mine)
    assert await store.set_instance_state(mine, InstanceState.FAILED, "no model", NOW + 1)
    (listed,) = await store.list_instances("ep")
    assert (listed.state, listed.detail, listed.updated_at) == (
        InstanceState.FAILED,
        "no model",
        NOW + 1,
    )


async def test_another_worker_cannot_change_or_release_an_instance(store: Store) -> None:
    await store.register_worker(worker("w1"))
    await store.claim_instance(claim("w1"))
    assert not await store.set_instance_state(claim("w2"), InstanceState.RUNNING, None, NOW)
    assert not await store.release_instance(claim("w2"))
    (listed,) = await store.list_instances("ep")
    assert (listed.worker_id, listed.state) == ("w1", InstanceState.STARTING)


async def test_released_instance_can_be_claimed_again(store: Store) -> None:
    await store.register_worker(worker("w1"))
    await store.register_worker(worker("w2"))
    await store.claim_instance(claim("w1"))
    assert await store.release_instance(claim("w1"))
    assert await store.claim_instance(claim("w2"))


# ------------------------------------------------------------------------- singletons


async def test_free_singleton_lease_is_acquired(store: Store) -> None:
    assert await store.acquire_lease("autoscaler", "a", NOW, NOW + 10)


async def test_held_singleton_lease_is_refused_to_others(store: Store) -> None:
    await store.acquire_lease("autoscaler", "a", NOW, NOW + 10)
    assert not await store.acquire_lease("autoscaler", "b", NOW + 5, NOW + 15)


async def test_holder_renews_its_singleton_lease(store: Store) -> None:
    await store.acquire_lease("autoscaler", "a", NOW, NOW + 10)
    assert await store.acquire_lease("autoscaler", "a", NOW + 5, NOW + 15)
    assert not await store.acquire_lease("autoscaler", "b", NOW + 12, NOW + 22)


async def test_lapsed_singleton_lease_is_taken_over(store: Store) -> None:
    await store.acquire_lease("autoscaler", "a", NOW, NOW + 10)
    assert await store.acquire_lease("autoscaler", "b", NOW + 11, NOW + 21)
    assert not await store.acquire_lease("autoscaler", "a", NOW + 12, NOW + 22)


async def test_released_singleton_lease_is_free_at_once(store: Store) -> None:
    await store.acquire_lease("autoscaler", "a", NOW, NOW + 10)
    await store.release_lease("autoscaler", "a")
    assert await store.acquire_lease("autoscaler", "b", NOW + 1, NOW + 11)


async def test_only_the_holder_releases_a_singleton_lease(store: Store) -> None:
    await store.acquire_lease("autoscaler", "a", NOW, NOW + 10)
    await store.release_lease("autoscaler", "b")
    assert not await store.acquire_lease("autoscaler", "b", NOW + 1, NOW + 11)


async def test_singleton_leases_are_independent_by_name(store: Store) -> None:
    assert await store.acquire_lease("autoscaler", "a", NOW, NOW + 10)
    assert await store.acquire_lease("retention", "b", NOW, NOW + 10)


async def test_concurrent_acquirers_on_separate_handles_have_one_winner(
    backend: Backend,
) -> None:
    handles = [await backend.open() for _ in range(3)]
    for round_number in range(10):
        name = f"lease-{round_number}"
        results = await asyncio.gather(
            *(h.acquire_lease(name, f"h{n}", NOW, NOW + 10) for n, h in enumerate(handles))
        )
        assert sum(results) == 1
