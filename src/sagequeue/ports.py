"""Ports: the small interfaces between the domain / front door and the adapters.

Adapters live in ``sagequeue.stores`` (queue + metadata, object stores) and
``sagequeue.runtimes`` (model runtimes). ``sagequeue.app`` is the only module
that picks concrete adapters from configuration.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# ======================================================================================
# Queue store: durable invocation requests with leases
# ======================================================================================


class InvocationStatus(enum.StrEnum):
    QUEUED = "Queued"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    EXPIRED = "Expired"

    @property
    def is_final(self) -> bool:
        return self in (
            InvocationStatus.COMPLETED,
            InvocationStatus.FAILED,
            InvocationStatus.EXPIRED,
        )


@dataclass(slots=True)
class Invocation:
    """One accepted InvokeEndpointAsync request and its life-cycle state."""

    request_id: str  # internal unique id (a UUID); also the default output file name
    inference_id: str
    endpoint_name: str
    output_location: str
    failure_location: str
    input_location: str | None = None  # s3://... or https://...
    inline_body: bytes | None = None  # InvokeEndpointAsync Body (<= 128,000 bytes)
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    request_ttl_seconds: int = 21600
    invocation_timeout_seconds: int = 900
    status: InvocationStatus = InvocationStatus.QUEUED
    failure_reason: str | None = None
    enqueued_at: float = 0.0  # epoch seconds
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0  # how many times a lease was taken to run it
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    seq: int | None = None  # FIFO order assigned by the store

    @property
    def expires_at(self) -> float:
        """When a still-queued request must end Expired."""
        return self.enqueued_at + self.request_ttl_seconds


class QueueStore(Protocol):
    """Durable queue of invocations.

    Exactly-once finishing: ``finish`` succeeds only for the current lease owner of
    an InProgress row, so a request whose lease lapsed and was re-leased elsewhere
    cannot be finished twice.
    """

    async def enqueue(self, invocation: Invocation) -> None:
        """Durably record a Queued invocation; returns only after commit."""

    async def lease(
        self,
        endpoint_name: str,
        owner: str,
        limit: int,
        lease_seconds: float,
        now: float,
    ) -> list[Invocation]:
        """Take up to ``limit`` Queued invocations of an endpoint, oldest first (FIFO),
        marking them InProgress with ``lease_owner=owner`` until ``now+lease_seconds``.
        Increments ``attempts`` and sets ``started_at``."""

    async def lease_overdue(
        self, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[Invocation]:
        """Take Queued invocations whose RequestTTLSeconds has passed (any endpoint),
        so the caller can write their failure object and finish them Expired."""

    async def renew(self, request_ids: Sequence[str], owner: str, lease_expires_at: float) -> None:
        """Extend leases still held by ``owner``."""

    async def finish(
        self,
        request_id: str,
        owner: str,
        status: InvocationStatus,
        failure_reason: str | None,
        now: float,
    ) -> bool:
        """Move an InProgress invocation leased by ``owner`` to a final status.
        Returns False (and changes nothing) when the lease is no longer ours."""

    async def release(self, request_id: str, owner: str, *, attempted: bool = True) -> bool:
        """Put an InProgress invocation we lease back to Queued (graceful shutdown, a
        crashed instance). ``attempted=False``: no model ever saw it (it was leased
        ahead of a free slot), so its lease does not count as an attempt."""

    async def requeue_lapsed(self, now: float) -> int:
        """Re-queue InProgress invocations whose lease expired; returns how many."""

    async def get(self, endpoint_name: str, inference_id: str) -> Invocation | None:
        """The newest invocation of an endpoint with this InferenceId."""

    async def count_by_status(self, endpoint_name: str | None = None) -> dict[str, int]:
        """How many invocations are in each status (for metrics / status UI)."""


# ======================================================================================
# Metadata store: control-plane resources (models, endpoint configs, endpoints)
# ======================================================================================


class ResourceKind(enum.StrEnum):
    MODEL = "model"
    ENDPOINT_CONFIG = "endpoint-config"
    ENDPOINT = "endpoint"


@dataclass(slots=True)
class Resource:
    """A control-plane resource, stored as the JSON document that Describe* returns."""

    kind: ResourceKind
    name: str
    doc: dict[str, Any]
    version: int = 0  # optimistic concurrency: bumped on each update
    created_at: float = field(default_factory=time.time)


class MetadataStore(Protocol):
    async def create_resource(self, resource: Resource) -> bool:
        """Insert; returns False when a resource of that kind and name exists.
        Names compare case-insensitively, as SageMaker's do."""

    async def get_resource(self, kind: ResourceKind, name: str) -> Resource | None: ...

    async def list_resources(self, kind: ResourceKind) -> list[Resource]: ...

    async def update_resource(self, resource: Resource) -> bool:
        """Replace ``doc`` if the stored version equals ``resource.version``;
        bumps the version. Returns False on a concurrent change."""

    async def delete_resource(self, kind: ResourceKind, name: str) -> bool: ...


# ======================================================================================
# Object store
# ======================================================================================


@dataclass(slots=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str  # without quotes: hex MD5, or "<hex>-<parts>" for multipart uploads
    last_modified: float  # epoch seconds
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without prefix
    # Other stored headers (Content-Encoding, Content-Disposition, Cache-Control, ...).
    headers: dict[str, str] = field(default_factory=dict)
    # Checksums by algorithm name ("CRC32", "SHA256", ...) -> base64; a multipart
    # upload's composite checksum is "<base64>-<parts>".
    checksums: dict[str, str] = field(default_factory=dict)
    encryption: str | None = None  # "AES256" when stored with SSE-S3
    tag_count: int = 0


class ObjectStore(Protocol):
    """Bucket/key object storage. Bodies are streamed as async iterators of bytes:
    no method may hold a whole object in memory.

    Errors are ``S3Error`` with S3's codes (NoSuchBucket, NoSuchKey, ...).
    The full S3 API surface (multipart, listing, copy) is on the concrete adapters'
    richer interface, see ``sagequeue.stores.objects``.
    """

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: AsyncIterator[bytes],
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Write atomically: readers see the old object or the new one, never a part."""

    async def get_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """Info and a stream of the body (``byte_range`` is inclusive first, last)."""

    async def head_object(self, bucket: str, key: str) -> ObjectInfo: ...

    async def delete_object(self, bucket: str, key: str) -> None: ...


# ======================================================================================
# Model runtime
# ======================================================================================


@dataclass(slots=True)
class ModelRequest:
    """What a model instance is invoked with."""

    inference_id: str
    # A stream, so that the dispatcher never holds a large input: it is piped into the
    # model process, which may hold it whole (the handler contract takes bytes).
    body: bytes | AsyncIterator[bytes]
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None


@dataclass(slots=True)
class ModelResponse:
    body: bytes
    content_type: str | None = None
    custom_attributes: str | None = None  # X-Amzn-SageMaker-Custom-Attributes set by handler


class ModelInvocationError(Exception):
    """The model failed; ``message`` is what goes into the failure object."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelInstance(Protocol):
    """One running copy of a model (its own process, or a remote container)."""

    max_concurrency: int

    async def invoke(self, request: ModelRequest, timeout: float) -> ModelResponse:
        """Raises ModelInvocationError on model failure, TimeoutError on timeout."""

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


class ModelRuntime(Protocol):
    async def start_instance(self, model: dict[str, Any], max_concurrency: int) -> ModelInstance:
        """Start an instance of a CreateModel document (DescribeModel shape).
        Raises ModelInvocationError with a reason when the model cannot load."""


# ======================================================================================
# Notifier (SNS / webhooks come later) and clock
# ======================================================================================


class Notifier(Protocol):
    async def notify(self, topic: str, message: dict[str, Any]) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock epoch seconds."""

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
