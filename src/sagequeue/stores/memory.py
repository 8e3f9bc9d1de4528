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
from sagequeue.ports import Invocation, InvocationStatus, Resource, ResourceKind

_QUEUED = InvocationStatus.QUEUED
_IN_PROGRESS = InvocationStatus.IN_PROGRESS


class MemoryStore:
    """Implements ``QueueStore`` and ``MetadataStore`` from ``sagequeue.ports``."""

    def __init__(self) -> None:
        self._invocations: dict[str, Invocation] = {}  # by request_id, in seq order
        self._next_seq = 1
        # (kind, name.lower()) -> stored resource (doc kept JSON-encoded, like the DB)
        self._resources: dict[tuple[ResourceKind, str], tuple[Resource, bytes]] = {}

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
    ) -> list[Invocation]:
        chosen = [
            inv
            for inv in self._invocations.values()
            if inv.status is _QUEUED and inv.endpoint_name == endpoint_name
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

    async def count_by_status(self, endpoint_name: str | None = None) -> dict[str, int]:
        counts = {status.value: 0 for status in InvocationStatus}
        for inv in self._invocations.values():
            if endpoint_name is None or inv.endpoint_name == endpoint_name:
                counts[inv.status.value] += 1
        return counts

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
