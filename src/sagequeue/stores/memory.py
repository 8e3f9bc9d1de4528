"""In-memory queue + metadata store: a fake for unit tests, with the same semantics as
``SqliteStore`` (the contract suite in tests/contract runs against both).

Nothing is durable. Every value handed out is a copy, so a caller mutating what it got
back cannot change the store behind its back (as with a real database).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import msgspec

from sagequeue.domain.errors import InternalFailure
from sagequeue.domain.metrics import combine, merge_points
from sagequeue.ports import (
    InstanceClaim,
    InstanceState,
    Invocation,
    InvocationStatus,
    MetricPoint,
    NotificationState,
    OutboxMessage,
    Resource,
    ResourceKind,
    WorkerRecord,
)
from sagequeue.stores.memory_logs import MemoryLogs
from sagequeue.stores.rows import (
    InstanceKey,
    instance_key,
)

_QUEUED = InvocationStatus.QUEUED
_IN_PROGRESS = InvocationStatus.IN_PROGRESS


class MemoryStore(MemoryLogs):
    """Implements ``QueueStore``, ``MetadataStore``, ``FleetStore`` and ``LogStore`` from
    ``sagequeue.ports``."""

    def __init__(self) -> None:
        super().__init__()
        self._invocations: dict[str, Invocation] = {}  # by request_id, in seq order
        self._next_seq = 1
        # (kind, name.lower()) -> stored resource (doc kept JSON-encoded, like the DB)
        self._resources: dict[tuple[ResourceKind, str], tuple[Resource, bytes]] = {}
        self._workers: dict[str, WorkerRecord] = {}
        self._instances: dict[InstanceKey, InstanceClaim] = {}
        self._singletons: dict[str, tuple[str, float]] = {}  # name -> (holder, expires_at)
        self._outbox: dict[str, OutboxMessage] = {}  # by message_id, in seq order
        self._next_outbox_seq = 1
        self._notification_failures: dict[str, int] = {}
        # (period_start, metric, endpoint, variant, writer) -> aggregate; and totals by
        # (metric, endpoint, variant, writer)
        self._metric_points: dict[tuple[int, str, str, str, str], MetricPoint] = {}
        self._metric_totals: dict[tuple[str, str, str, str], MetricPoint] = {}

    async def open(self) -> None:
        """Nothing to open; present so the fake can stand in for SqliteStore."""

    async def close(self) -> None:
        """Nothing to close."""

    # ---------------------------------------------------------------- QueueStore
    async def enqueue(self, invocation: Invocation) -> None:
        """Sets ``invocation.seq``, and ``enqueued_at`` to now when it is 0."""
        if invocation.request_id in self._invocations:
            raise InternalFailure(f"duplicate request id {invocation.request_id}")
        if not invocation.enqueued_at:
            invocation.enqueued_at = time.time()
        invocation.seq = self._next_seq
        self._next_seq += 1
        stored = dataclasses.replace(
            invocation,
            status=_QUEUED,
            lease_owner=None,
            lease_expires_at=None,
            started_at=None,
            finished_at=None,
            failure_reason=None,
        )
        self._invocations[stored.request_id] = stored

    async def lease(
        self,
        endpoint_name: str,
        owner: str,
        limit: int,
        lease_seconds: float,
        now: float,
        *,
        variant_name: str | None = None,
    ) -> list[Invocation]:
        chosen = [
            inv
            for inv in self._invocations.values()
            if inv.status is _QUEUED
            and inv.endpoint_name == endpoint_name
            and (variant_name is None or inv.variant_name == variant_name)
        ][: max(limit, 0)]
        return [self._take(inv, owner, lease_seconds, now) for inv in chosen]

    async def lease_overdue(
        self, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[Invocation]:
        overdue = [
            inv
            for inv in self._invocations.values()
            if inv.status is _QUEUED and inv.expires_at < now
        ]
        overdue.sort(key=lambda inv: (inv.expires_at, inv.seq or 0))
        return [self._take(inv, owner, lease_seconds, now) for inv in overdue[: max(limit, 0)]]

    async def renew(self, request_ids: Sequence[str], owner: str, lease_expires_at: float) -> None:
        for request_id in request_ids:
            inv = self._invocations.get(request_id)
            if inv is not None and inv.status is _IN_PROGRESS and inv.lease_owner == owner:
                inv.lease_expires_at = lease_expires_at

    async def finish(
        self,
        request_id: str,
        owner: str,
        status: InvocationStatus,
        failure_reason: str | None,
        now: float,
        *,
        notifications: Sequence[OutboxMessage] = (),
    ) -> bool:
        if not InvocationStatus(status).is_final:
            raise InternalFailure(f"finish needs a final status, not {status}")
        inv = self._leased_by(request_id, owner)
        if inv is None:
            return False
        inv.status = InvocationStatus(status)
        inv.failure_reason = failure_reason
        inv.finished_at = now
        inv.lease_expires_at = None
        for message in notifications:
            if message.message_id in self._outbox:
                continue
            stored = dataclasses.replace(
                message,
                next_attempt_at=message.next_attempt_at or message.created_at,
                seq=self._next_outbox_seq,
            )
            self._next_outbox_seq += 1
            self._outbox[stored.message_id] = stored
        return True

    async def release(self, request_id: str, owner: str, *, attempted: bool = True) -> bool:
        inv = self._leased_by(request_id, owner)
        if inv is None:
            return False
        _back_to_queue(inv)
        if not attempted:
            inv.attempts -= 1
        return True

    async def requeue_lapsed(self, now: float) -> int:
        lapsed = [
            inv
            for inv in self._invocations.values()
            if inv.status is _IN_PROGRESS
            and inv.lease_expires_at is not None
            and inv.lease_expires_at < now
        ]
        for inv in lapsed:
            _back_to_queue(inv)
        return len(lapsed)

    async def get(self, endpoint_name: str, inference_id: str) -> Invocation | None:
        newest: Invocation | None = None
        for inv in self._invocations.values():
            if inv.endpoint_name == endpoint_name and inv.inference_id == inference_id:
                newest = inv
        return dataclasses.replace(newest) if newest is not None else None

    async def list_invocations(
        self,
        endpoint_name: str,
        *,
        status: InvocationStatus | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[Invocation]:
        page: list[Invocation] = []
        for inv in reversed(self._invocations.values()):  # newest first
            if len(page) >= limit:
                break
            if (
                inv.endpoint_name == endpoint_name
                and (status is None or inv.status is status)
                and (before_seq is None or (inv.seq or 0) < before_seq)
            ):
                page.append(dataclasses.replace(inv, inline_body=None))
        return page

    async def count_by_status(self, endpoint_name: str | None = None) -> dict[str, int]:
        counts = {status.value: 0 for status in InvocationStatus}
        for inv in self._invocations.values():
            if endpoint_name is None or inv.endpoint_name == endpoint_name:
                counts[inv.status.value] += 1
        return counts

    async def purge_finished(self, finished_before: float, limit: int) -> int:
        old = [
            inv
            for inv in self._invocations.values()
            if inv.status.is_final
            and inv.finished_at is not None
            and inv.finished_at < finished_before
        ]
        old.sort(key=lambda inv: inv.finished_at or 0.0)
        for inv in old[: max(limit, 0)]:
            del self._invocations[inv.request_id]
        return min(len(old), max(limit, 0))

    async def oldest_queued(self, endpoint_name: str, variant_name: str) -> float | None:
        for inv in self._invocations.values():
            if (
                inv.status is _QUEUED
                and inv.endpoint_name == endpoint_name
                and inv.variant_name == variant_name
            ):
                return inv.enqueued_at
        return None

    def _take(self, inv: Invocation, owner: str, lease_seconds: float, now: float) -> Invocation:
        inv.status = _IN_PROGRESS
        inv.lease_owner = owner
        inv.lease_expires_at = now + lease_seconds
        inv.started_at = now
        inv.attempts += 1
        return dataclasses.replace(inv)

    def _leased_by(self, request_id: str, owner: str) -> Invocation | None:
        inv = self._invocations.get(request_id)
        if inv is None or inv.status is not _IN_PROGRESS or inv.lease_owner != owner:
            return None
        return inv

    # --------------------------------------------------------------- OutboxStore
    async def lease_notifications(
        self, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[OutboxMessage]:
        due = [
            message
            for message in self._outbox.values()
            if message.state is NotificationState.PENDING and message.next_attempt_at <= now
        ]
        due.sort(key=lambda message: message.next_attempt_at)
        leased = []
        for message in due[: max(limit, 0)]:
            message.lease_owner = owner
            message.next_attempt_at = now + lease_seconds
            message.attempts += 1
            leased.append(dataclasses.replace(message))
        leased.sort(key=lambda message: message.seq or 0)
        return leased

    async def notification_delivered(self, message_id: str, owner: str, now: float) -> bool:
        message = self._outbox_held(message_id, owner)
        if message is None:
            return False
        message.state = NotificationState.DELIVERED
        message.finished_at = now
        message.lease_owner = None
        message.last_error = None
        return True

    async def notification_retry(
        self, message_id: str, owner: str, next_attempt_at: float, error: str
    ) -> bool:
        message = self._outbox_held(message_id, owner)
        if message is None:
            return False
        message.next_attempt_at = next_attempt_at
        message.lease_owner = None
        message.last_error = error
        return True

    async def notification_failed(
        self, message_id: str, owner: str, now: float, error: str
    ) -> bool:
        message = self._outbox_held(message_id, owner)
        if message is None:
            return False
        message.state = NotificationState.FAILED
        message.finished_at = now
        message.lease_owner = None
        message.last_error = error
        name = message.endpoint_name
        self._notification_failures[name] = self._notification_failures.get(name, 0) + 1
        return True

    async def notification_failure_counts(self) -> dict[str, int]:
        return dict(self._notification_failures)

    async def notifications_of(self, endpoint_name: str, inference_id: str) -> list[OutboxMessage]:
        return [
            dataclasses.replace(message)
            for message in self._outbox.values()
            if message.endpoint_name == endpoint_name and message.inference_id == inference_id
        ]

    async def purge_notifications(
        self, delivered_before: float, failed_before: float, limit: int
    ) -> int:
        cutoffs = {
            NotificationState.DELIVERED: delivered_before,
            NotificationState.FAILED: failed_before,
        }
        old = [
            message.message_id
            for message in self._outbox.values()
            if message.state in cutoffs
            and message.finished_at is not None
            and message.finished_at < cutoffs[message.state]
        ][: max(limit, 0)]
        for message_id in old:
            del self._outbox[message_id]
        return len(old)

    def _outbox_held(self, message_id: str, owner: str) -> OutboxMessage | None:
        message = self._outbox.get(message_id)
        if (
            message is None
            or message.state is not NotificationState.PENDING
            or message.lease_owner != owner
        ):
            return None
        return message

    # ---------------------------------------------------------------- MetricsStore
    async def record_metrics(self, writer: str, points: Sequence[MetricPoint]) -> None:
        for point in points:
            series = (point.metric, point.endpoint_name, point.variant_name)
            key = (point.period_start, *series, writer)
            have = self._metric_points.get(key)
            self._metric_points[key] = (
                dataclasses.replace(point, buckets=tuple(point.buckets))
                if have is None
                else combine(have, point)
            )
            total = dataclasses.replace(point, period_start=0, buckets=tuple(point.buckets))
            have_total = self._metric_totals.get((*series, writer))
            self._metric_totals[(*series, writer)] = (
                total if have_total is None else combine(have_total, total)
            )

    async def read_metrics(
        self,
        start: int,
        end: int,
        *,
        metrics: Sequence[str] | None = None,
        endpoint_name: str | None = None,
    ) -> list[MetricPoint]:
        return merge_points(
            point
            for point in self._metric_points.values()
            if start <= point.period_start < end
            and (metrics is None or point.metric in metrics)
            and (endpoint_name is None or point.endpoint_name == endpoint_name)
        )

    async def metric_totals(self) -> list[MetricPoint]:
        return merge_points(self._metric_totals.values())

    async def purge_metrics(self, before: int, limit: int) -> int:
        old = sorted(key for key in self._metric_points if key[0] < before)[: max(limit, 0)]
        for key in old:
            del self._metric_points[key]
        return len(old)

    # ---------------------------------------------------------------- FleetStore
    async def register_worker(self, worker: WorkerRecord) -> None:
        if worker.worker_id in self._workers:
            raise InternalFailure(f"duplicate worker id {worker.worker_id}")
        self._workers[worker.worker_id] = dataclasses.replace(worker)

    async def heartbeat(self, worker_id: str, now: float, expires_at: float) -> bool:
        worker = self._workers.get(worker_id)
        if worker is None:
            return False
        worker.heartbeat_at = now
        worker.heartbeat_expires_at = expires_at
        return True

    async def remove_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)
        self._drop_instances_of(worker_id)

    async def reap_workers(self, now: float) -> list[str]:
        dead = [w.worker_id for w in self._workers.values() if w.heartbeat_expires_at < now]
        for worker_id in dead:
            del self._workers[worker_id]
            self._drop_instances_of(worker_id)
            for inv in self._invocations.values():
                if inv.status is _IN_PROGRESS and inv.lease_owner == worker_id:
                    _back_to_queue(inv)
        return dead

    async def list_workers(self) -> list[WorkerRecord]:
        workers = sorted(self._workers.values(), key=lambda w: (w.started_at, w.worker_id))
        return [dataclasses.replace(w) for w in workers]

    async def claim_instance(self, claim: InstanceClaim) -> bool:
        key = instance_key(claim)
        if key in self._instances or claim.worker_id not in self._workers:
            return False
        self._instances[key] = dataclasses.replace(claim, endpoint_name=key[0])
        return True

    async def set_instance_state(
        self, claim: InstanceClaim, state: InstanceState, detail: str | None, now: float
    ) -> bool:
        stored = self._instances.get(instance_key(claim))
        if stored is None or stored.worker_id != claim.worker_id:
            return False
        stored.state = InstanceState(state)
        stored.detail = detail
        stored.updated_at = now
        return True

    async def release_instance(self, claim: InstanceClaim) -> bool:
        key = instance_key(claim)
        stored = self._instances.get(key)
        if stored is None or stored.worker_id != claim.worker_id:
            return False
        del self._instances[key]
        return True

    async def list_instances(self, endpoint_name: str | None = None) -> list[InstanceClaim]:
        wanted = None if endpoint_name is None else endpoint_name.lower()
        return [
            dataclasses.replace(claim)
            for key, claim in sorted(self._instances.items())
            if wanted is None or key[0] == wanted
        ]

    async def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        current = self._singletons.get(name)
        if current is not None and current[0] != holder and current[1] >= now:
            return False
        self._singletons[name] = (holder, expires_at)
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        current = self._singletons.get(name)
        if current is not None and current[0] == holder:
            del self._singletons[name]

    def _drop_instances_of(self, worker_id: str) -> None:
        for key in [k for k, claim in self._instances.items() if claim.worker_id == worker_id]:
            del self._instances[key]

    # ------------------------------------------------------------- MetadataStore
    async def create_resource(self, resource: Resource) -> bool:
        key = (ResourceKind(resource.kind), resource.name.lower())
        if key in self._resources:
            return False
        self._resources[key] = (dataclasses.replace(resource, doc={}), _encode(resource))
        return True

    async def get_resource(self, kind: ResourceKind, name: str) -> Resource | None:
        entry = self._resources.get((ResourceKind(kind), name.lower()))
        return _decode(entry) if entry is not None else None

    async def list_resources(self, kind: ResourceKind) -> list[Resource]:
        """Oldest first (by created_at, then name)."""
        found = [_decode(entry) for (k, _), entry in self._resources.items() if k == kind]
        found.sort(key=lambda r: (r.created_at, r.name.lower()))
        return found

    async def update_resource(self, resource: Resource) -> bool:
        key = (ResourceKind(resource.kind), resource.name.lower())
        entry = self._resources.get(key)
        if entry is None or entry[0].version != resource.version:
            return False
        stored = dataclasses.replace(entry[0], version=resource.version + 1)
        self._resources[key] = (stored, _encode(resource))
        resource.version += 1
        return True

    async def delete_resource(self, kind: ResourceKind, name: str) -> bool:
        return self._resources.pop((ResourceKind(kind), name.lower()), None) is not None


def _back_to_queue(inv: Invocation) -> None:
    """A lease given up or lapsed: queued again, attempts kept."""
    inv.status = _QUEUED
    inv.lease_owner = None
    inv.lease_expires_at = None
    inv.started_at = None


def _encode(resource: Resource) -> bytes:
    return msgspec.json.encode(resource.doc)


def _decode(entry: tuple[Resource, bytes]) -> Resource:
    stored, doc = entry
    return dataclasses.replace(stored, doc=msgspec.json.decode(doc))
