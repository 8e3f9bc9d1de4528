"""Ports: the small interfaces between the domain / front door and the adapters.

Adapters live in ``sagequeue.stores`` (queue + metadata, object stores) and
``sagequeue.runtimes`` (model runtimes). ``sagequeue.app`` is the only module
that picks concrete adapters from configuration.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Callable, Sequence
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
    # The production variant that serves it, chosen by weight when it is accepted.
    variant_name: str = ""

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
        *,
        variant_name: str | None = None,
    ) -> list[Invocation]:
        """Take up to ``limit`` Queued invocations of an endpoint (of one variant, or of
        any when ``variant_name`` is None), oldest first (FIFO), marking them InProgress
        with ``lease_owner=owner`` until ``now+lease_seconds``. Increments ``attempts``
        and sets ``started_at``."""

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
        *,
        notifications: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Move an InProgress invocation leased by ``owner`` to a final status, and record
        its ``notifications`` in the outbox in the same transaction (only if it finished:
        a crash can never lose a notification of a finished request, nor send one of a
        request that did not finish). Returns False (and changes nothing) when the lease
        is no longer ours."""

    async def release(self, request_id: str, owner: str, *, attempted: bool = True) -> bool:
        """Put an InProgress invocation we lease back to Queued (graceful shutdown, a
        crashed instance). ``attempted=False``: no model ever saw it (it was leased
        ahead of a free slot), so its lease does not count as an attempt."""

    async def requeue_lapsed(self, now: float) -> int:
        """Re-queue InProgress invocations whose lease expired; returns how many."""

    async def get(self, endpoint_name: str, inference_id: str) -> Invocation | None:
        """The newest invocation of an endpoint with this InferenceId."""

    async def list_invocations(
        self,
        endpoint_name: str,
        *,
        status: InvocationStatus | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[Invocation]:
        """Up to ``limit`` invocations of an endpoint, newest first (``seq`` descending):
        only those in ``status`` when given, only those with ``seq < before_seq`` when
        given (keyset pagination: the last seq of a page asks for the next). Indexed, so a
        page costs O(limit log n) whatever the number of rows. ``inline_body`` is not
        read (None): a listing never carries request bodies."""

    async def count_by_status(self, endpoint_name: str | None = None) -> dict[str, int]:
        """How many invocations are in each status (for metrics / status UI)."""

    async def purge_finished(self, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` Completed / Failed / Expired invocations that finished
        before ``finished_before`` (retention); returns how many. Short transactions, so
        a purge never holds up enqueue or lease for long."""

    async def oldest_queued(self, endpoint_name: str, variant_name: str) -> float | None:
        """``enqueued_at`` of the first Queued invocation (FIFO order) of an endpoint
        variant; None when none is queued. Cheap: the backlog metrics sample it."""


# ======================================================================================
# Notification outbox: SNS / webhook messages of finished requests, delivered at least
# once by a leased sender
# ======================================================================================


class NotificationState(enum.StrEnum):
    PENDING = "Pending"  # to deliver (or being delivered, while leased)
    DELIVERED = "Delivered"
    FAILED = "Failed"  # retried for the whole retry period in vain


@dataclass(slots=True)
class OutboxMessage:
    """One notification of a finished request to one topic."""

    message_id: str  # stable: receivers deduplicate by it
    endpoint_name: str
    inference_id: str
    topic: str  # an SNS topic ARN or an http(s):// webhook URL
    body: bytes  # the notification JSON
    created_at: float  # when the request finished
    state: NotificationState = NotificationState.PENDING
    # When it is due; while a sender leases it, when that lease lapses.
    next_attempt_at: float = 0.0
    attempts: int = 0  # delivery attempts started (counted when leased)
    lease_owner: str | None = None
    finished_at: float | None = None  # delivered or given up
    last_error: str | None = None
    seq: int | None = None


class OutboxStore(Protocol):
    """The outbox of notifications (rows written by ``QueueStore.finish``). Senders on
    any number of processes lease due rows like invocations, so exactly one delivers
    each message at a time; a lapsed lease (a crashed sender) makes it due again."""

    async def lease_notifications(
        self, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[OutboxMessage]:
        """Take up to ``limit`` Pending messages due at ``now`` (oldest due first): they
        become ``owner``'s until ``now + lease_seconds``; ``attempts`` is incremented."""

    async def notification_delivered(self, message_id: str, owner: str, now: float) -> bool:
        """Mark a message ``owner`` leases Delivered. False when the lease is not ours."""

    async def notification_retry(
        self, message_id: str, owner: str, next_attempt_at: float, error: str
    ) -> bool:
        """Give a leased message back, due again at ``next_attempt_at``."""

    async def notification_failed(
        self, message_id: str, owner: str, now: float, error: str
    ) -> bool:
        """Give up on a leased message: Failed, and its endpoint's failure count is
        incremented in the same transaction."""

    async def notification_failure_counts(self) -> dict[str, int]:
        """NotificationFailures: how many notifications each endpoint gave up on (since
        the store was created; never purged)."""

    async def notifications_of(self, endpoint_name: str, inference_id: str) -> list[OutboxMessage]:
        """The outbox rows of one request (oldest first), until they are purged."""

    async def purge_notifications(
        self, delivered_before: float, failed_before: float, limit: int
    ) -> int:
        """Delete up to ``limit`` Delivered messages that finished before
        ``delivered_before`` and Failed ones before ``failed_before``; returns how many."""


# ======================================================================================
# Fleet store: workers, the model instances placed on them, singleton leases
# ======================================================================================


class InstanceState(enum.StrEnum):
    STARTING = "Starting"  # claimed; the owning worker is starting the model process
    RUNNING = "Running"  # serving
    FAILED = "Failed"  # could not start (``detail`` says why); kept until the generation goes


@dataclass(slots=True)
class WorkerRecord:
    """One ``--role worker`` (or ``all``) process, registered with a heartbeat."""

    worker_id: str  # unique per registration; also the lease owner of its invocations
    host: str
    pid: int
    max_instances: int
    # Lower-cased endpoint names it serves; empty = every endpoint.
    endpoints: tuple[str, ...] = ()
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    heartbeat_expires_at: float = 0.0  # gone (and reaped) once this passes


@dataclass(slots=True)
class InstanceClaim:
    """One desired model instance of an endpoint variant's deployment generation,
    owned by the worker that runs it. (endpoint, variant, generation, slot) is unique:
    at most one worker ever owns an instance."""

    endpoint_name: str  # lower-cased
    variant_name: str
    generation: int
    slot: int  # 0 .. desired count - 1
    worker_id: str
    state: InstanceState = InstanceState.STARTING
    claimed_at: float = 0.0
    updated_at: float = 0.0
    detail: str | None = None  # why it failed


class FleetStore(Protocol):
    """Fleet-wide state that no process keeps in memory alone (DESIGN.md, "A fleet")."""

    async def register_worker(self, worker: WorkerRecord) -> None:
        """Insert the worker's row (a new ``worker_id`` for every registration)."""

    async def heartbeat(self, worker_id: str, now: float, expires_at: float) -> bool:
        """Extend the worker's registration. False when its row is gone (it was reaped
        as dead): the worker must drop its instances and register anew."""

    async def remove_worker(self, worker_id: str) -> None:
        """A graceful stop: delete the worker and its instance claims."""

    async def reap_workers(self, now: float) -> list[str]:
        """In one transaction: delete workers whose heartbeat expired before ``now``,
        their instance claims, and put the invocations they lease back to Queued
        (attempts kept). Returns the reaped worker ids."""

    async def list_workers(self) -> list[WorkerRecord]:
        """Every registered worker, oldest first."""

    async def claim_instance(self, claim: InstanceClaim) -> bool:
        """Record ``claim`` unless that instance is already claimed; exactly one of
        concurrent claimants gets True."""

    async def set_instance_state(
        self,
        claim: InstanceClaim,
        state: InstanceState,
        detail: str | None,
        now: float,
    ) -> bool:
        """Change the state of an instance ``claim.worker_id`` owns; False when it no
        longer owns it."""

    async def release_instance(self, claim: InstanceClaim) -> bool:
        """Delete an instance claim ``claim.worker_id`` owns."""

    async def list_instances(self, endpoint_name: str | None = None) -> list[InstanceClaim]:
        """Instance claims of one endpoint (lower-cased name) or of all."""

    async def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Take or extend the singleton lease ``name``: True when it was free, lapsed,
        or already ``holder``'s (now held until ``expires_at``)."""

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the singleton lease up if ``holder`` holds it."""


# ======================================================================================
# Metadata store: control-plane resources (models, endpoint configs, endpoints)
# ======================================================================================


class ResourceKind(enum.StrEnum):
    MODEL = "model"
    ENDPOINT_CONFIG = "endpoint-config"
    ENDPOINT = "endpoint"
    # CloudWatch and Application Auto Scaling documents (their names are case-sensitive:
    # they are stored under a case-free key, see sagequeue.monitoring.cloudwatch).
    ALARM = "alarm"
    SCALABLE_TARGET = "scalable-target"
    SCALING_POLICY = "scaling-policy"


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
# Metrics store: per-period aggregates of SageMaker's metrics, written by many processes
# ======================================================================================


@dataclass(slots=True)
class MetricPoint:
    """The aggregate of one metric series over one period (CloudWatch's minute): what
    one writer saw, or (read back) what all writers saw together."""

    metric: str  # SageMaker's metric name, e.g. "TimeInBacklog"
    endpoint_name: str  # as created (CloudWatch dimension values are case-sensitive)
    variant_name: str  # "" for endpoint-level metrics (the backlog)
    period_start: int  # epoch milliseconds; 0 in running totals
    sum: float
    count: float  # CloudWatch's SampleCount
    minimum: float
    maximum: float
    # Latency histogram bucket counts (sagequeue.domain.metrics.LATENCY_BOUNDS_SECONDS);
    # empty for counters and gauges.
    buckets: tuple[int, ...] = ()


class MetricsStore(Protocol):
    """Metric aggregates kept per period and writer (so that no row is written by two
    processes), plus each writer's running totals since it started (monotonic: what
    Prometheus counters need). Reads merge the writers."""

    async def record_metrics(self, writer: str, points: Sequence[MetricPoint]) -> None:
        """Add ``points`` to ``writer``'s aggregates of their periods (sum and count
        added, min and max widened, buckets added) and to its running totals, in one
        transaction."""

    async def read_metrics(
        self,
        start: int,
        end: int,
        *,
        metrics: Sequence[str] | None = None,
        endpoint_name: str | None = None,
    ) -> list[MetricPoint]:
        """Aggregates of periods starting in [start, end) (epoch ms), all writers merged,
        ordered by (metric, endpoint, variant, period); optionally of some metrics or one
        endpoint only."""

    async def metric_totals(self) -> list[MetricPoint]:
        """Running totals of every series, all writers merged (``period_start`` 0)."""

    async def purge_metrics(self, before: int, limit: int) -> int:
        """Delete up to ``limit`` period rows older than ``before`` (epoch ms); returns
        how many (retention: the store stays bounded)."""


# ======================================================================================
# Wake-ups: "an endpoint has new work", across processes
# ======================================================================================


class WakeupChannel(Protocol):
    """Rings the dispatchers of every worker process that can see the store (all hosts
    on PostgreSQL, this host's processes on SQLite). Lost rings are harmless: workers
    also poll, slowly."""

    def ring(self, endpoint_name: str) -> None:
        """Called after an enqueue committed. Cheap and never blocks (a no-op where the
        store itself notifies in the enqueue's commit)."""

    async def listen(self, on_ring: Callable[[str], None]) -> None:
        """Start calling ``on_ring(endpoint_name)`` on this event loop for every ring."""

    async def close(self) -> None: ...


class ChangeNotices(Protocol):
    """Notices that an invocation's state may have changed, where the store sends them
    across processes (PostgreSQL's LISTEN / NOTIFY). Event feeds wait on them, reading
    the store again after each; without them a feed polls the store."""

    async def wait(self, endpoint_name: str, inference_id: str, timeout: float) -> bool:
        """Return when a notice that may concern this invocation came (True), or after
        ``timeout`` seconds (False)."""
        ...


# ======================================================================================
# Model logs: CloudWatch Logs-style groups, streams and events, in the shared store
# ======================================================================================


@dataclass(slots=True)
class LogEvent:
    """One line of a log stream. Times are epoch milliseconds, as in CloudWatch Logs."""

    group: str  # /aws/sagemaker/Endpoints/<endpoint>
    stream: str  # <variant>/<instance-id>[/data-log]
    timestamp: int  # when it was printed
    message: str
    ingestion_time: int = 0  # when it was written to the store
    seq: int = 0  # set by the store: unique and increasing (the event id)


@dataclass(slots=True)
class LogStreamInfo:
    group: str
    stream: str
    created_at: int  # its first event's ingestion
    first_event_at: int
    last_event_at: int
    last_ingestion_at: int
    stored_bytes: int  # UTF-8 bytes of the messages it holds


@dataclass(slots=True)
class LogGroupInfo:
    group: str
    created_at: int  # its first stream's
    stored_bytes: int


# Events are read in (timestamp, seq) order; a position is such a pair.
LogPosition = tuple[int, int]


@dataclass(slots=True)
class LogQuery:
    """Which events of one group to read, and in which direction."""

    group: str
    streams: Sequence[str] | None = None  # only these streams (None: any)
    stream_prefix: str = ""  # only streams whose names start with it
    start: int | None = None  # timestamp >= start
    end: int | None = None  # timestamp < end
    after: LogPosition | None = None  # (timestamp, seq) > after
    before: LogPosition | None = None  # (timestamp, seq) < before
    newest_first: bool = False


class LogStore(Protocol):
    """Model instance logs, written in batches by workers on any host and read by any
    API process. Groups and streams exist while they hold events."""

    async def put_log_events(self, events: Sequence[LogEvent]) -> None:
        """Append events in one transaction (their streams are created or extended);
        sets each event's ``seq``. ``ingestion_time`` is the caller's."""

    async def list_log_groups(self, prefix: str = "") -> list[LogGroupInfo]:
        """Groups whose names start with ``prefix``, by name."""

    async def list_log_streams(self, group: str, prefix: str = "") -> list[LogStreamInfo]:
        """Streams of ``group`` whose names start with ``prefix``, by name."""

    async def read_log_events(self, query: LogQuery, limit: int) -> list[LogEvent]:
        """Up to ``limit`` events matching ``query``, oldest first (newest first with
        ``newest_first``), ordered by (timestamp, seq)."""

    async def purge_log_events(self, ingested_before: int, limit: int) -> int:
        """Delete up to ``limit`` events written before ``ingested_before`` (retention by
        age), oldest first in writing order up to the first written since, and the
        streams left empty; returns how many events went."""

    async def trim_log_events(self, max_bytes: int, limit: int) -> int:
        """While the stored messages exceed ``max_bytes``, delete the oldest events (up
        to ``limit``) and the streams left empty; returns how many went."""


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
    """The model failed; ``message`` is what goes into the failure object. ``status``:
    the HTTP status the model answered (a handler that raised counts as 500)."""

    def __init__(self, message: str, *, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ModelInstance(Protocol):
    """One running copy of a model (its own process, or a remote container)."""

    max_concurrency: int

    async def invoke(self, request: ModelRequest, timeout: float) -> ModelResponse:
        """Raises ModelInvocationError on model failure, TimeoutError on timeout."""

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


class InstanceLog(Protocol):
    """Where one model instance's log lines go: its streams of the endpoint's log group
    (sagequeue.domain.logs). Cheap and never blocking: lines are shipped in batches."""

    @property
    def instance_id(self) -> str: ...

    def model_output(self, line: str) -> None:
        """A line the model printed (its process's stdout or stderr)."""

    def platform(self, line: str) -> None:
        """A line of sagequeue's own about the instance or a request it runs."""


class ModelRuntime(Protocol):
    async def start_instance(
        self, model: dict[str, Any], max_concurrency: int, *, log: InstanceLog | None = None
    ) -> ModelInstance:
        """Start an instance of a CreateModel document (DescribeModel shape); what the
        model prints goes to ``log`` (the server's stderr without one). Raises
        ModelInvocationError with a reason when the model cannot load."""


# ======================================================================================
# Notifier (SNS topics, webhooks) and clock
# ======================================================================================


class DeliveryError(Exception):
    """One delivery attempt failed. ``permanent``: no retry can succeed (a target that
    is not allowed, a topic that cannot be parsed); otherwise it is tried again."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class Notifier(Protocol):
    """Sends one notification to its topic: one attempt, within ``timeout`` seconds;
    raises DeliveryError (retries and their schedule are the caller's)."""

    async def deliver(self, message: OutboxMessage, timeout: float) -> None: ...

    async def close(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock epoch seconds."""

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
