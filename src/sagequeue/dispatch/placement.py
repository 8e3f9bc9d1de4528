"""Placement: which model instances this worker runs, decided with the whole fleet
through the shared store (the decisions are ``sagequeue.domain.placement``'s).

Each round reads the endpoint documents, the live workers and every instance claim, then:

* drains and releases this worker's claims that nothing wants any more (an endpoint
  deleted or scaled in, a generation replaced by an update);
* claims free instance slots up to its fair share and capacity, and starts a model
  instance for each claim it wins (a pool per endpoint variant generation feeds them);
* lets the pools of the serving generation lease, and the others not;
* moves endpoints whose new generation is ready (or failed) to InService (or Failed),
  with an optimistic update of the endpoint document, which any worker may do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sagequeue.config import Settings
from sagequeue.dispatch.execution import MAX_REASON_LENGTH, Executor
from sagequeue.dispatch.membership import Membership
from sagequeue.dispatch.model_logs import LogShipper
from sagequeue.dispatch.pools import LocalInstance, Pool, close_instance
from sagequeue.domain.logs import new_instance_id
from sagequeue.domain.placement import (
    EndpointPlan,
    InstanceSpec,
    Rollout,
    RolloutOutcome,
    SlotKey,
    live_workers,
    plan_endpoint,
    rollout,
    slots_to_claim,
    unclaimed_slots,
    unwanted_claims,
)
from sagequeue.domain.resources import (
    DEPLOYMENT_KEY,
    FAILED_GENERATION_KEY,
    GENERATION_KEY,
    SERVING_KEY,
    EndpointStatus,
    endpoint_production_variants,
)
from sagequeue.ports import (
    Clock,
    FleetStore,
    InstanceClaim,
    InstanceLog,
    InstanceState,
    InvocationStatus,
    MetadataStore,
    ModelInvocationError,
    ModelRuntime,
    ObjectStore,
    QueueStore,
    ResourceKind,
)

log = logging.getLogger("sagequeue.worker")

RuntimeFactory = Callable[[dict[str, Any], ObjectStore, Settings], ModelRuntime]
InstanceKey = tuple[str, str, int, int]  # SlotKey + slot number

# A slot nobody claimed for this long is taken by any worker with room, beyond its share.
OVERDUE_SECONDS = 3.0
# A serving instance that could not start is tried again (by whoever claims it) after this.
FAILED_RETRY_SECONDS = 30.0
TEARDOWN_BATCH = 100


class PlacementStore(QueueStore, MetadataStore, FleetStore, Protocol):
    """Placement reads endpoints and claims instances; teardown fails queued requests."""


def instance_key(claim: InstanceClaim) -> InstanceKey:
    return (claim.endpoint_name, claim.variant_name, claim.generation, claim.slot)


class Placement:
    def __init__(
        self,
        store: PlacementStore,
        objects: ObjectStore,
        settings: Settings,
        clock: Clock,
        membership: Membership,
        executor: Executor,
        runtime_factory: RuntimeFactory,
        *,
        default_concurrency: int,
        lease_seconds: float,
        poll_seconds: float,
        stop_grace_seconds: float,
        logs: LogShipper | None = None,
    ) -> None:
        self.store = store
        self.objects = objects
        self.settings = settings
        self.clock = clock
        self.membership = membership
        self.executor = executor
        self._runtime_factory = runtime_factory
        self._default_concurrency = default_concurrency
        self._lease_seconds = lease_seconds
        self._poll = poll_seconds
        self._grace = stop_grace_seconds
        self.logs = logs
        self.pools: dict[SlotKey, Pool] = {}
        self._local: dict[InstanceKey, LocalInstance] = {}
        self._starting: dict[InstanceKey, asyncio.Task[None]] = {}
        self._retiring: set[InstanceKey] = set()
        self._unclaimed_since: dict[InstanceKey, float] = {}
        self._torn_down: set[str] = set()  # endpoints gone whose queue was failed here
        self._background: set[asyncio.Task[Any]] = set()
        self._closing: set[Pool] = set()  # pools finishing their last requests
        self._shortfall: dict[str, int] = {}  # endpoint -> instances no worker could take
        self.stopping = False

    # ------------------------------------------------------------------ one round
    async def tick(self) -> None:
        if self.stopping:
            return
        now = self.clock.now()
        plans: dict[str, EndpointPlan] = {}
        for resource in await self.store.list_resources(ResourceKind.ENDPOINT):
            plan = plan_endpoint(resource.doc, self._default_concurrency)
            if plan is not None:
                plans[plan.key] = plan
        workers = live_workers(await self.store.list_workers(), now)
        claims = await self.store.list_instances()
        me = self.membership.record
        if all(w.worker_id != me.worker_id for w in workers):
            workers.append(me)  # registered this instant, or the list raced the heartbeat

        for claim in unwanted_claims(me.worker_id, plans, claims):
            self._retire(claim)
        for claim in claims:
            if claim.worker_id == me.worker_id:
                self._tend_own(claim, now)

        unclaimed = unclaimed_slots(plans, claims)
        for key in [k for k in self._unclaimed_since if k not in unclaimed]:
            del self._unclaimed_since[key]
        for key in unclaimed:
            self._unclaimed_since.setdefault(key, now)
        overdue = {
            k for k, since in self._unclaimed_since.items() if now - since >= OVERDUE_SECONDS
        }
        for spec, slot in slots_to_claim(me, plans, workers, claims, overdue):
            claim = InstanceClaim(
                endpoint_name=spec.key[0],
                variant_name=spec.variant_name,
                generation=spec.generation,
                slot=slot,
                worker_id=me.worker_id,
                state=InstanceState.STARTING,
                claimed_at=now,
                updated_at=now,
            )
            if await self.store.claim_instance(claim):
                claims.append(claim)
                self._start(spec, claim)
        self._report_shortfall(plans, claims, overdue)

        for name, plan in list(plans.items()):
            outcome = rollout(plan, workers, claims)
            if outcome is not None:
                doc = await self._apply_rollout(plan, outcome)
                replanned = plan_endpoint(doc, self._default_concurrency) if doc else None
                if replanned is not None:
                    plans[name] = replanned  # its new generation serves from this round on
                    # At once, before anything else awaits: a request accepted after the
                    # switch must not be leased by the generation it replaced.
                    self._activate_serving_pools(plans, only=name)
        self._activate_serving_pools(plans)
        self._tear_down_gone(plans)

    def _activate_serving_pools(
        self, plans: dict[str, EndpointPlan], only: str | None = None
    ) -> None:
        """Pools of the serving generations lease; the others stop leasing."""
        for pool in self.pools.values():
            if only is not None and pool.key[0] != only:
                continue
            plan = plans.get(pool.key[0])
            serving = plan is not None and plan.serving_generation == pool.spec.generation
            if serving and not pool.active:
                pool.active = True
                pool.wake()
            elif not serving and pool.active:
                pool.deactivate()

    def _tend_own(self, claim: InstanceClaim, now: float) -> None:
        """A claim of ours in the store: one we hold no instance for (lost in a crash of
        a start, or from before a restart of this worker id) is released; a serving
        instance that could not start is retried after a while."""
        key = instance_key(claim)
        if key in self._retiring or key in self._starting or key in self._local:
            return
        if claim.state == InstanceState.FAILED and now - claim.updated_at < FAILED_RETRY_SECONDS:
            return  # kept, so that the rollout sees the failure
        self._retire(claim)

    def _report_shortfall(
        self,
        plans: dict[str, EndpointPlan],
        claims: list[InstanceClaim],
        overdue: set[InstanceKey],
    ) -> None:
        """Say (once per change) when an endpoint wants more instances than the fleet
        takes: it serves with what it has."""
        counts: dict[str, int] = {}
        for key in overdue:
            counts[key[0]] = counts.get(key[0], 0) + 1
        for name, plan in plans.items():
            missing = counts.get(name, 0)
            if missing != self._shortfall.get(name, 0):
                if missing:
                    log.warning(
                        "endpoint %s: %d instance(s) not placed: no live worker serving it "
                        "has room (--max-instances / --endpoints)",
                        plan.name,
                        missing,
                    )
                else:
                    log.info("endpoint %s: every instance is placed", plan.name)
                self._shortfall[name] = missing

    # ------------------------------------------------------------------ instances
    def _start(self, spec: InstanceSpec, claim: InstanceClaim) -> None:
        key = instance_key(claim)
        task = asyncio.create_task(self._start_instance(spec, claim), name=f"start {key}")
        self._starting[key] = task
        task.add_done_callback(lambda _t: self._starting.pop(key, None))

    async def _start_instance(self, spec: InstanceSpec, claim: InstanceClaim) -> None:
        instance_log = self._instance_log(spec, claim)
        began = self.clock.monotonic()
        try:
            runtime = self._runtime_factory(spec.model, self.objects, self.settings)
            instance = await runtime.start_instance(
                spec.model, spec.max_concurrency, log=instance_log
            )
        except asyncio.CancelledError:
            raise
        except ModelInvocationError as exc:
            reason = exc.message
        except Exception as exc:
            reason = f"The model could not be started: {exc!r}"
        else:
            if self.stopping or not await self._set_state(claim, InstanceState.RUNNING, None):
                await close_instance(instance)  # no longer ours (this worker was reaped)
                return
            local = LocalInstance(claim, instance, instance_log)
            self._local[instance_key(claim)] = local
            self._pool(spec).add(local)
            log.info(
                "instance %d of %s/%s (generation %d) running",
                claim.slot,
                spec.endpoint_name,
                spec.variant_name,
                spec.generation,
            )
            if instance_log is not None:
                instance_log.platform(
                    f"Instance {instance_log.instance_id} running: the model loaded in "
                    f"{self.clock.monotonic() - began:.1f} s"
                )
            return
        log.warning("endpoint %s: an instance failed to start: %s", spec.endpoint_name, reason)
        if instance_log is not None:
            instance_log.platform(f"Instance {instance_log.instance_id} could not start: {reason}")
        await self._set_state(claim, InstanceState.FAILED, reason[:MAX_REASON_LENGTH])

    def _instance_log(self, spec: InstanceSpec, claim: InstanceClaim) -> InstanceLog | None:
        """A new instance's log streams, opened with a line saying what it is."""
        if self.logs is None:
            return None
        instance_id = new_instance_id()
        instance_log = self.logs.instance_log(spec.endpoint_name, spec.variant_name, instance_id)
        model_name = spec.model.get("ModelName", "")
        instance_log.platform(
            f"Instance {instance_id} starting: model {model_name}, variant "
            f"{spec.variant_name} of endpoint {spec.endpoint_name} (generation "
            f"{spec.generation}, slot {claim.slot}), on worker {claim.worker_id}"
        )
        return instance_log

    async def _set_state(
        self, claim: InstanceClaim, state: InstanceState, detail: str | None
    ) -> bool:
        try:
            return await self.store.set_instance_state(claim, state, detail, self.clock.now())
        except Exception:
            log.exception("recording instance state %s failed", state)
            return False

    def _pool(self, spec: InstanceSpec) -> Pool:
        pool = self.pools.get(spec.key)
        if pool is None:
            pool = Pool(
                spec,
                self.store,
                self.executor,
                self.clock,
                lambda: self.membership.worker_id,
                lease_seconds=self._lease_seconds,
                poll_seconds=self._poll,
            )
            self.pools[spec.key] = pool
            pool.start()
        return pool

    def _retire(self, claim: InstanceClaim) -> None:
        key = instance_key(claim)
        if key in self._retiring:
            return
        self._retiring.add(key)
        self._spawn(self._drain_and_release(claim))

    async def _drain_and_release(self, claim: InstanceClaim) -> None:
        key = instance_key(claim)
        try:
            starting = self._starting.get(key)
            if starting is not None:
                await asyncio.wait([starting])  # let it finish, so the process is closed
            local = self._local.pop(key, None)
            pool = self.pools.get(key[:3])
            if local is not None and local.log is not None:
                local.log.platform(
                    f"Instance {local.log.instance_id} stopping: it takes no new request and "
                    "closes once the ones it runs are done"
                )
            if local is not None and pool is not None:
                await pool.retire(local, self._grace)
            elif local is not None:
                await close_instance(local.instance)
            with contextlib.suppress(Exception):
                await self.store.release_instance(claim)
            if pool is not None and not pool.instances and self.pools.get(key[:3]) is pool:
                # Its last instance is gone (a new claim makes a new pool): let the
                # requests still writing their results finish, then close it.
                del self.pools[key[:3]]
                self._closing.add(pool)
                try:
                    await pool.close(self._grace)
                finally:
                    self._closing.discard(pool)
        finally:
            self._retiring.discard(key)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ endpoints
    async def _apply_rollout(self, plan: EndpointPlan, outcome: Rollout) -> dict[str, Any] | None:
        """Record the rollout's outcome in the endpoint document; the document written,
        or None when another worker (or a newer update) got there first."""
        now = self.clock.now()

        def change(doc: dict[str, Any]) -> bool:
            if outcome.capacity:
                return settle_capacity_update(doc)
            if int(doc.get(GENERATION_KEY, 0)) != outcome.generation or doc.get(
                "EndpointStatus"
            ) not in (EndpointStatus.CREATING, EndpointStatus.UPDATING):
                return False  # another worker did it, or a newer update replaced it
            doc["LastModifiedTime"] = now
            if outcome.outcome is RolloutOutcome.IN_SERVICE:
                deployment = doc[DEPLOYMENT_KEY]
                config = deployment["EndpointConfig"]
                if doc["EndpointStatus"] == EndpointStatus.UPDATING:
                    doc["ProductionVariants"] = endpoint_production_variants(config)
                doc["EndpointStatus"] = str(EndpointStatus.IN_SERVICE)
                doc["EndpointConfigName"] = config.get("EndpointConfigName")
                doc["AsyncInferenceConfig"] = config.get("AsyncInferenceConfig")
                doc[SERVING_KEY] = {"Generation": outcome.generation, "Deployment": deployment}
                doc.pop("FailureReason", None)
                return True
            doc["FailureReason"] = (outcome.reason or "An instance failed to start.")[
                :MAX_REASON_LENGTH
            ]
            if plan.serving_generation is None:
                doc["EndpointStatus"] = str(EndpointStatus.FAILED)
            else:
                # An update that fails leaves the endpoint serving its old deployment.
                doc["EndpointStatus"] = str(EndpointStatus.IN_SERVICE)
                doc[FAILED_GENERATION_KEY] = outcome.generation
            return True

        def settle_capacity_update(doc: dict[str, Any]) -> bool:
            """Back to InService after UpdateEndpointWeightsAndCapacities (the weights
            and counts it set stay); with the reason when an instance could not start."""
            current = plan_endpoint(doc, self._default_concurrency)
            if (
                current is None
                or not current.capacity_update
                or current.serving_generation != outcome.generation
            ):
                return False  # settled by another worker, or replaced by UpdateEndpoint
            doc["LastModifiedTime"] = now
            doc["EndpointStatus"] = str(EndpointStatus.IN_SERVICE)
            if outcome.outcome is RolloutOutcome.FAILED:
                doc["FailureReason"] = (outcome.reason or "An instance failed to start.")[
                    :MAX_REASON_LENGTH
                ]
            return True

        doc = await self._update_endpoint(plan.name, change)
        if doc is not None:
            if outcome.capacity:
                log.info("endpoint %s: capacity update settled", plan.name)
            else:
                log.info(
                    "endpoint %s: generation %d %s",
                    plan.name,
                    outcome.generation,
                    "in service" if outcome.outcome is RolloutOutcome.IN_SERVICE else "failed",
                )
        return doc

    async def _update_endpoint(
        self, name: str, change: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """Apply ``change`` to the endpoint document (optimistic concurrency: retried
        on concurrent updates); the new document, or None when ``change`` found nothing
        to do."""
        for _ in range(50):
            resource = await self.store.get_resource(ResourceKind.ENDPOINT, name)
            if resource is None:
                return None
            doc = dict(resource.doc)
            if not change(doc):
                return None
            resource.doc = doc
            if await self.store.update_resource(resource):
                return doc
            await asyncio.sleep(0.01)
        log.error("could not update endpoint %s: too many concurrent changes", name)
        return None

    def _tear_down_gone(self, plans: dict[str, EndpointPlan]) -> None:
        """An endpoint that is gone: once this worker's pools of it are closed, fail what
        is still queued for it (the request cannot run anywhere any more)."""
        self._torn_down &= set(plans)
        gone = {key[0] for key in self.pools if key[0] not in plans}
        for name in gone - self._torn_down:
            self._torn_down.add(name)
            display = next(p.endpoint_name for k, p in self.pools.items() if k[0] == name)
            self._spawn(self._fail_queued(display))

    async def _fail_queued(self, endpoint_name: str) -> None:
        name = endpoint_name.lower()
        while any(pool.key[0] == name for pool in self.all_pools()):
            await asyncio.sleep(self._poll)  # the pools drain first
        reason = f"Endpoint {endpoint_name} was deleted before the request ran."
        while True:
            batch = await self.store.lease(
                endpoint_name,
                self.membership.worker_id,
                TEARDOWN_BATCH,
                self._lease_seconds,
                self.clock.now(),
            )
            for inv in batch:
                await self.executor.finish_with_failure(inv, InvocationStatus.FAILED, reason)
            if len(batch) < TEARDOWN_BATCH:
                return

    def all_pools(self) -> list[Pool]:
        """Every pool with requests of this worker: serving ones and closing ones."""
        return [*self.pools.values(), *self._closing]

    # ------------------------------------------------------------------ wake / stop
    def wake(self, endpoint_name: str) -> None:
        name = endpoint_name.lower()
        for key, pool in self.pools.items():
            if key[0] == name and pool.active:
                pool.wake()

    async def drop_all(self) -> None:
        """This worker was declared gone: its claims and leases are no longer its own.
        Its instances take no new request and close once the ones they run are done;
        those requests were re-queued by the fleet, so finishing them is refused (the
        other run finishes them) and nothing is given back to the queue."""
        for task in list(self._starting.values()):
            task.cancel()
        pools, self.pools = list(self.pools.values()), {}
        self._local.clear()
        self._retiring.clear()
        self._unclaimed_since.clear()
        for pool in pools:
            self._closing.add(pool)
            self._spawn(self._close_dropped(pool))

    async def _close_dropped(self, pool: Pool) -> None:
        try:
            await pool.close(self._grace, release=False)
        finally:
            self._closing.discard(pool)

    async def stop(self) -> None:
        """Stop leasing, let running requests finish (up to the grace period), give the
        rest back to the queue and close every instance."""
        self.stopping = True
        for task in list(self._starting.values()):
            task.cancel()
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        pools = list(self.pools.values())
        for pool in pools:
            pool.closing = True
            pool.wake()
        await asyncio.gather(*(pool.close(self._grace) for pool in pools))
        self.pools.clear()
        self._local.clear()
        if self._background:
            await asyncio.wait(list(self._background), timeout=self._grace)
