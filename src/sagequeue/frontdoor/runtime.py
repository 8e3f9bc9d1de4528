"""The SageMaker runtime API (rest-json): InvokeEndpointAsync, the status extension
``GET /endpoints/{EndpointName}/async-invocations/{InferenceId}`` (DESIGN.md) with its push
feed ``.../{InferenceId}/events`` (server-sent events, ``frontdoor/feed.py``), and the
listing extension ``GET /endpoints/{EndpointName}/async-invocations`` (an endpoint's
invocations newest first, by status, in pages; docs/api.md).

This is the ingest hot path: header parsing, validation, one endpoint lookup (cached
for a fraction of a second) and one durable enqueue per request; JSON by msgspec.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

import msgspec

from sagequeue.config import Settings
from sagequeue.domain.errors import ServiceError, UnknownOperation, ValidationError
from sagequeue.domain.invocation import (
    MAX_INLINE_BODY_BYTES,
    AsyncInvocationInput,
    result_locations,
    validate_invocation,
)
from sagequeue.domain.resources import (
    INVOCABLE_STATUSES,
    async_output_paths,
    choose_variant,
    resource_arn,
)
from sagequeue.domain.validation import wire_int
from sagequeue.frontdoor.errors import WireProtocol
from sagequeue.frontdoor.feed import invocation_events
from sagequeue.frontdoor.http import Request, Response
from sagequeue.ports import (
    ChangeNotices,
    Invocation,
    InvocationStatus,
    MetadataStore,
    QueueStore,
    ResourceKind,
)

if TYPE_CHECKING:
    from sagequeue.monitoring.recorder import MetricsSink

# How long an endpoint document read from the store is reused: the hot path must not
# read the store for every request, and a control-plane change shows up this late.
ENDPOINT_CACHE_SECONDS = 0.5

_ENDPOINTS_PREFIX = "/endpoints/"
_INVOCATIONS = "async-invocations"
_EVENTS_SUFFIX = "/events"
# The IAM action names a key policy uses for the runtime API. The status call is this
# server's own extension, so its action is too (docs/security.md).
INVOKE_ACTION = "sagemaker:InvokeEndpointAsync"
STATUS_ACTION = "sagemaker:DescribeInferenceStatus"
LIST_ACTION = "sagemaker:ListInferences"
# Listing pages: MaxResults' bounds and default.
MAX_LIST_RESULTS = 100
DEFAULT_LIST_RESULTS = 50
_STATUS_VALUES = ", ".join(status.value for status in InvocationStatus)


class RuntimeStore(QueueStore, MetadataStore, Protocol):
    """The runtime API needs the queue and the endpoint documents."""


class InvocationNotFound(ServiceError):
    """Status extension: no invocation with that id (not an AWS operation, so the code
    is ours; documented in docs/api.md)."""

    code = "ResourceNotFound"
    status = 404


class _StatusBody(msgspec.Struct, omit_defaults=True):
    # Also each item of a listing page.
    InferenceId: str
    Status: str
    OutputLocation: str
    FailureLocation: str
    EnqueuedTime: float
    Attempts: int
    # The production variant chosen (by weight) when the request was accepted: the one
    # that runs it (InvokeEndpoint's X-Amzn-Invoked-Production-Variant).
    InvokedProductionVariant: str | None = None
    # The request's InputLocation (absent for an inline Body).
    InputLocation: str | None = None
    FailureReason: str | None = None
    StartTime: float | None = None
    EndTime: float | None = None


class _ListBody(msgspec.Struct, omit_defaults=True):
    Invocations: list[_StatusBody]
    NextToken: str | None = None


_encode = msgspec.json.Encoder().encode


class RuntimeApi:
    protocol = WireProtocol.REST_JSON
    # InvokeEndpointAsync's inline Body limit; the status call has no body.
    max_body = MAX_INLINE_BODY_BYTES

    @staticmethod
    def body_too_large() -> ServiceError:
        return ValidationError(
            "1 validation error detected: Value at 'body' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_INLINE_BODY_BYTES}"
        )

    def __init__(
        self,
        get_store: Callable[[], RuntimeStore],
        settings: Settings,
        on_enqueued: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        change_notices: Callable[[], ChangeNotices | None] = lambda: None,
        metrics: MetricsSink | None = None,
    ) -> None:
        self._get_store = get_store
        self._settings = settings
        self._on_enqueued = on_enqueued
        self._clock = clock
        self._change_notices = change_notices
        # Set when the server stops: event feeds end, so that no stream holds it up.
        self._stopping: asyncio.Event | None = None
        self._metrics = metrics
        # endpoint name -> (valid until (monotonic), document or None when missing)
        self._endpoints: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def close_streams(self) -> None:
        """The server is stopping: end every event feed."""
        self._stopping_event().set()

    def _stopping_event(self) -> asyncio.Event:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    async def handle(self, request: Request) -> Response:
        name, inference_id, feed = _parse_path(request.raw_path)
        if name is not None and inference_id is None and request.method == "POST":
            if request.access is not None:
                request.authorize(INVOKE_ACTION, self._endpoint_arn(name))
            if self._metrics is None:
                return await self._invoke_async(request, name)
            try:
                return await self._invoke_async(request, name)
            except Exception as exc:
                await self._count_error(name, exc)
                raise
        if name is not None and inference_id is not None and request.method == "GET":
            if request.access is not None:
                request.authorize(STATUS_ACTION, self._endpoint_arn(name))
            if feed:
                return await self._events(request, name, inference_id)
            return await self._status(request, name, inference_id)
        if name is not None and inference_id is None and request.method == "GET":
            if request.access is not None:
                request.authorize(LIST_ACTION, self._endpoint_arn(name))
            return await self._list(request, name)
        raise UnknownOperation(f"No operation matches {request.method} {request.path}.", status=404)

    def _endpoint_arn(self, name: str) -> str:
        settings = self._settings
        return resource_arn(settings.region, settings.account_id, ResourceKind.ENDPOINT, name)

    # ------------------------------------------------------------------ InvokeEndpointAsync

    async def _invoke_async(self, request: Request, endpoint_name: str) -> Response:
        headers = request.headers
        valid = validate_invocation(
            AsyncInvocationInput(
                endpoint_name=endpoint_name,
                content_type=headers.get("x-amzn-sagemaker-content-type"),
                accept=headers.get("x-amzn-sagemaker-accept"),
                custom_attributes=headers.get("x-amzn-sagemaker-custom-attributes"),
                inference_id=headers.get("x-amzn-sagemaker-inference-id"),
                input_location=headers.get("x-amzn-sagemaker-inputlocation"),
                s3_output_path_extension=headers.get("x-amzn-sagemaker-s3outputpathextension"),
                filename=headers.get("x-amzn-sagemaker-filename"),
                request_ttl_seconds=headers.get("x-amzn-sagemaker-requestttlseconds"),
                invocation_timeout_seconds=headers.get("x-amzn-sagemaker-invocationtimeoutseconds"),
                body=request.body,
            )
        )
        if request.access is not None and valid.input_location is not None:
            # No execution role stands between a caller and the input here: the server
            # reads it, so a scoped key must itself be allowed to read it.
            input_arn = s3_object_arn(valid.input_location)
            if input_arn is not None:
                request.authorize("s3:GetObject", input_arn)
        store = self._get_store()
        endpoint = await self._endpoint(store, endpoint_name)
        settings = self._settings
        if endpoint is None or endpoint.get("EndpointStatus") not in INVOCABLE_STATUSES:
            # SageMaker answers "not found" for endpoints it cannot route to yet or any
            # more (Creating, Failed, Deleting) as well as for unknown names.
            raise ValidationError(
                f"Endpoint {endpoint_name} of account {settings.account_id} not found."
            )
        output_path, failure_path = async_output_paths(endpoint)
        if not output_path:
            raise ValidationError(
                f"Endpoint {endpoint_name} of account {settings.account_id} is not an "
                "asynchronous inference endpoint."
            )
        # The HTTP request's id names the invocation too: one id to trace it by.
        request_id = request.request_id
        locations = result_locations(
            output_path, failure_path, valid.filename or request_id, valid.s3_output_path_extension
        )
        inference_id = valid.inference_id or request_id
        invocation = Invocation(
            request_id=request_id,
            inference_id=inference_id,
            endpoint_name=endpoint["EndpointName"],
            output_location=locations.output_location,
            failure_location=locations.failure_location,
            input_location=valid.input_location,
            inline_body=valid.body,
            content_type=valid.content_type,
            accept=valid.accept,
            custom_attributes=valid.custom_attributes,
            request_ttl_seconds=valid.request_ttl_seconds,
            invocation_timeout_seconds=valid.invocation_timeout_seconds,
            enqueued_at=time.time(),
            variant_name=choose_variant(endpoint, random.random()),
        )
        await store.enqueue(invocation)
        self._on_enqueued(endpoint["EndpointName"])
        if self._metrics is not None:
            self._metrics.count("Invocations", endpoint["EndpointName"], invocation.variant_name)
        return Response(
            202,
            [
                ("content-type", "application/json"),
                ("x-amzn-requestid", request.request_id),
                ("x-amzn-sagemaker-outputlocation", locations.output_location),
                ("x-amzn-sagemaker-failurelocation", locations.failure_location),
            ],
            _encode({"InferenceId": inference_id}),
        )

    async def _count_error(self, endpoint_name: str, exc: Exception) -> None:
        """Invocation4XXErrors / Invocation5XXErrors of a refused request to an endpoint
        that takes requests (made-up names make no metric series), attributed to the
        variant that would have served it."""
        assert self._metrics is not None
        status = exc.status if isinstance(exc, ServiceError) else 500
        try:
            endpoint = await self._endpoint(self._get_store(), endpoint_name)
        except Exception:
            return
        if endpoint is None or endpoint.get("EndpointStatus") not in INVOCABLE_STATUSES:
            return
        metric = "Invocation4XXErrors" if status < 500 else "Invocation5XXErrors"
        variant = choose_variant(endpoint, random.random())
        self._metrics.count(metric, endpoint["EndpointName"], variant)

    async def _endpoint(self, store: RuntimeStore, name: str) -> dict[str, Any] | None:
        now = self._clock()
        cached = self._endpoints.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        resource = await store.get_resource(ResourceKind.ENDPOINT, name)
        doc = resource.doc if resource is not None else None
        if len(self._endpoints) > 10_000:  # bounded against floods of made-up names
            self._endpoints.clear()
        self._endpoints[name] = (now + ENDPOINT_CACHE_SECONDS, doc)
        return doc

    # ------------------------------------------------------------------ status extension

    async def _status(self, request: Request, endpoint_name: str, inference_id: str) -> Response:
        invocation = await self._get_store().get(endpoint_name, inference_id)
        if invocation is None:
            raise InvocationNotFound(
                f"Inference {inference_id} of endpoint {endpoint_name} not found."
            )
        return Response(
            200,
            [("content-type", "application/json"), ("x-amzn-requestid", request.request_id)],
            status_json(invocation),
        )

    # ------------------------------------------------------------------ listing extension

    async def _list(self, request: Request, endpoint_name: str) -> Response:
        """One page of an endpoint's invocations, newest first (``StatusEquals``,
        ``MaxResults``, ``NextToken`` as in SageMaker's List* calls)."""
        query = request.query
        status = _status_filter(query.get("StatusEquals"))
        limit = _max_results(query.get("MaxResults"))
        before = _decode_list_token(query.get("NextToken"))
        store = self._get_store()
        resource = await store.get_resource(ResourceKind.ENDPOINT, endpoint_name)
        if resource is None:
            raise ValidationError(
                f"Endpoint {endpoint_name} of account {self._settings.account_id} not found."
            )
        name = str(resource.doc.get("EndpointName", endpoint_name))
        # One more than the page tells whether another page follows.
        rows = await store.list_invocations(name, status=status, before_seq=before, limit=limit + 1)
        page = rows[:limit]
        next_token = None
        if len(rows) > limit and page[-1].seq is not None:
            next_token = _encode_list_token(page[-1].seq)
        body = _ListBody(Invocations=[_status_body(inv) for inv in page], NextToken=next_token)
        return Response(
            200,
            [("content-type", "application/json"), ("x-amzn-requestid", request.request_id)],
            _encode(body),
        )

    async def _events(self, request: Request, endpoint_name: str, inference_id: str) -> Response:
        store = self._get_store()
        invocation = await store.get(endpoint_name, inference_id)
        if invocation is None:
            raise InvocationNotFound(
                f"Inference {inference_id} of endpoint {endpoint_name} not found."
            )
        events = invocation_events(
            invocation,
            lambda: store.get(endpoint_name, inference_id),
            status_json,
            notices=self._change_notices(),
            stopping=self._stopping_event(),
        )
        return Response(
            200,
            [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-accel-buffering", "no"),  # proxies must not hold events back
                ("x-amzn-requestid", request.request_id),
            ],
            events,
        )


def status_json(invocation: Invocation) -> bytes:
    """The status call's JSON for an invocation (also each event of its feed)."""
    return _encode(_status_body(invocation))


def _status_body(invocation: Invocation) -> _StatusBody:
    return _StatusBody(
        InferenceId=invocation.inference_id,
        Status=str(invocation.status),
        OutputLocation=invocation.output_location,
        FailureLocation=invocation.failure_location,
        EnqueuedTime=invocation.enqueued_at,
        Attempts=invocation.attempts,
        InvokedProductionVariant=invocation.variant_name or None,
        InputLocation=invocation.input_location,
        FailureReason=invocation.failure_reason,
        StartTime=invocation.started_at,
        EndTime=invocation.finished_at,
    )


def _status_filter(value: str | None) -> InvocationStatus | None:
    if value is None or value == "":
        return None
    try:
        return InvocationStatus(value)
    except ValueError:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'statusEquals' failed to "
            f"satisfy constraint: Member must satisfy enum value set: [{_STATUS_VALUES}]"
        ) from None


def _max_results(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIST_RESULTS
    try:
        number = wire_int(value, signed=True)
    except ValueError:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'maxResults' failed to "
            "satisfy constraint: Member must be a number"
        ) from None
    if not 1 <= number <= MAX_LIST_RESULTS:
        bound = (
            "greater than or equal to 1"
            if number < 1
            else f"less than or equal to {MAX_LIST_RESULTS}"
        )
        raise ValidationError(
            f"1 validation error detected: Value '{number}' at 'maxResults' failed to "
            f"satisfy constraint: Member must have value {bound}"
        )
    return number


_TOKEN_PREFIX = "seq:"


def _encode_list_token(seq: int) -> str:
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + str(seq)).encode()).decode()


def _decode_list_token(token: str | None) -> int | None:
    """The seq a page continues below; ValidationError for a token this server did not
    make."""
    if token is None or token == "":
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        digits = text[len(_TOKEN_PREFIX) :]
        if text.startswith(_TOKEN_PREFIX) and digits.isdigit() and len(digits) <= 19:
            seq = int(digits)
            if 0 < seq < 2**63:  # a store's 64-bit sequence
                return seq
    except (ValueError, UnicodeError):
        pass
    raise ValidationError("Invalid pagination token: NextToken is not one this call returned.")


def s3_object_arn(location: str) -> str | None:
    """The object ARN of an ``s3://bucket/key`` location (None for other schemes)."""
    if not location.startswith("s3://"):
        return None
    return "arn:aws:s3:::" + location[len("s3://") :]


def _parse_path(raw_path: str) -> tuple[str | None, str | None, bool]:
    """(EndpointName, InferenceId, whether the event feed is asked for) of
    ``/endpoints/{name}/async-invocations[/{id}[/events]]``; (None, None, False) for any
    other path. Segments are split before decoding, so an InferenceId may hold an
    encoded ``/`` (and one that ends in ``/events`` must encode its ``/``)."""
    if not raw_path.startswith(_ENDPOINTS_PREFIX):
        return None, None, False
    parts = raw_path[len(_ENDPOINTS_PREFIX) :].split("/", 2)
    if len(parts) < 2 or parts[1] != _INVOCATIONS or not parts[0]:
        return None, None, False
    name = unquote(parts[0])
    if len(parts) == 2:
        return name, None, False
    raw_id, feed = parts[2], False
    if raw_id.endswith(_EVENTS_SUFFIX):
        raw_id, feed = raw_id[: -len(_EVENTS_SUFFIX)], True
    inference_id = unquote(raw_id)
    return (name, inference_id, feed) if inference_id else (None, None, False)
