"""``GET /metrics``: SageMaker's metrics in the Prometheus text format.

Everything comes from the shared store, so every API process of a fleet answers the
same (the multiprocess-safe way): counters and latency histograms from the writers'
running totals, backlog gauges read live from the queue and the fleet's instances. A
custom prometheus-client collector renders them.

Access: unsigned from the loopback interface; from elsewhere with ``Authorization:
Bearer <metrics_token>`` or a SigV4-signed request (a scoped key needs
``cloudwatch:GetMetricData``). docs/metrics.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from sagequeue.domain.errors import SignatureError
from sagequeue.domain.metrics import (
    LATENCY_BOUNDS_SECONDS,
    METRICS,
    UNIT_SECONDS,
    Kind,
)
from sagequeue.domain.policy import KeyPolicy
from sagequeue.frontdoor.http import Request, Response
from sagequeue.frontdoor.sigv4 import SigV4Verifier, parse_authorization
from sagequeue.monitoring.backlog import BacklogStore, endpoint_backlogs
from sagequeue.ports import MetricPoint, MetricsStore

PREFIX = "sagequeue_"
# Prometheus names of SageMaker's metrics (counters get "_total" from the client).
NAMES = {
    "Invocations": "invocations",
    "Invocation4XXErrors": "invocation_4xx_errors",
    "Invocation5XXErrors": "invocation_5xx_errors",
    "InvocationsProcessed": "invocations_processed",
    "InvocationFailures": "invocation_failures",
    "ExpiredRequests": "expired_requests",
    "RequestDownloadFailures": "request_download_failures",
    "ResponseUploadFailures": "response_upload_failures",
    "ModelLatency": "model_latency_seconds",
    "RequestDownloadLatency": "request_download_latency_seconds",
    "ResponseUploadLatency": "response_upload_latency_seconds",
    "TimeInBacklog": "time_in_backlog_seconds",
    "TotalProcessingTime": "total_processing_time_seconds",
    "NotificationFailures": "notification_failures",
    "ApproximateBacklogSize": "approximate_backlog_size",
    "ApproximateBacklogSizePerInstance": "approximate_backlog_size_per_instance",
    "ApproximateAgeOfOldestRequest": "approximate_age_of_oldest_request_seconds",
    "HasBacklogWithoutCapacity": "has_backlog_without_capacity",
    "CurrentInstanceCount": "current_instance_count",
    "DesiredInstanceCount": "desired_instance_count",
}
SCOPED_KEY_ACTION = "cloudwatch:GetMetricData"


class PrometheusStore(MetricsStore, BacklogStore, Protocol):
    """Running totals, and the backlog's sources."""


class _Families:
    """A collector that yields families built beforehand (the store is read with async
    calls; prometheus-client collects synchronously)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def families(totals: list[MetricPoint], gauges: dict[str, dict[str, float]]) -> list[Metric]:
    """Metric families from the running totals and the live backlog gauges."""
    built: dict[str, Any] = {}  # Counter / Histogram / Gauge families by name
    for point in totals:
        definition = METRICS.get(point.metric)
        name = NAMES.get(point.metric)
        if definition is None or name is None:
            continue
        labels = [point.endpoint_name, point.variant_name]
        if definition.kind is Kind.COUNTER:
            family = built.get(name)
            if family is None:
                family = built[name] = CounterMetricFamily(
                    PREFIX + name, definition.description, labels=["endpoint", "variant"]
                )
            family.add_metric(labels, point.sum)
        elif definition.kind is Kind.LATENCY and point.buckets:
            family = built.get(name)
            if family is None:
                family = built[name] = HistogramMetricFamily(
                    PREFIX + name,
                    definition.description + " (seconds)",
                    labels=["endpoint", "variant"],
                )
            cumulative = 0
            buckets = []
            for bound, count in zip(
                (*LATENCY_BOUNDS_SECONDS, float("inf")), point.buckets, strict=False
            ):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(
                labels, buckets, sum_value=point.sum * UNIT_SECONDS.get(definition.unit, 1.0)
            )
    for metric, name in NAMES.items():
        definition = METRICS[metric]
        if definition.kind is not Kind.GAUGE:
            continue
        family = GaugeMetricFamily(PREFIX + name, definition.description, labels=["endpoint"])
        for endpoint, values in sorted(gauges.items()):
            family.add_metric([endpoint], values[metric])
        built[name] = family
    return list(built.values())


class PrometheusEndpoint:
    def __init__(
        self,
        get_store: Callable[[], PrometheusStore | None],
        verifier: SigV4Verifier,
        policies: dict[str, KeyPolicy],
        token: str | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._get_store = get_store
        self._verifier = verifier
        self._policies = policies
        self._token = token
        self._clock = clock

    async def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _plain(405, "Method not allowed: GET /metrics.\n", [("allow", "GET, HEAD")])
        refusal = self._authenticate(request)
        if refusal is not None:
            return refusal
        store = self._get_store()
        if store is None:
            return _plain(503, "The server is starting; retry shortly.\n")
        now = self._clock()
        totals = await store.metric_totals()
        gauges = {
            name: backlog.gauges(now) for name, backlog in (await endpoint_backlogs(store)).items()
        }
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families(totals, gauges)))
        return Response(
            200,
            [("content-type", CONTENT_TYPE_PLAIN_0_0_4)],
            generate_latest(registry),
        )

    def _authenticate(self, request: Request) -> Response | None:
        """None when the request may read the metrics; else the refusal."""
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            given = authorization[len("bearer ") :].strip()
            if self._token and hmac.compare_digest(given.encode(), self._token.encode()):
                return None
            return _plain(401, "Invalid bearer token.\n", [("www-authenticate", "Bearer")])
        if authorization.startswith("AWS4-HMAC-SHA256") or "X-Amz-Signature" in (
            request.query_string
        ):
            try:
                parts = parse_authorization(
                    request.headers, request.query if "X-Amz-" in request.query_string else {}
                )
                self._verifier.verify(
                    parts,
                    request.method,
                    request.raw_path,
                    request.query_string,
                    request.headers,
                    request.headers.get("x-amz-content-sha256", _EMPTY_SHA256),
                )
            except SignatureError as exc:
                return _plain(403, f"{exc.message}\n")
            policy = self._policies.get(parts.access_key)
            if policy is not None:
                try:
                    policy.check(SCOPED_KEY_ACTION, "*")
                except Exception as exc:
                    return _plain(403, f"{exc}\n")
            return None
        if _is_loopback(request.client_host):
            return None
        return _plain(
            401,
            "GET /metrics from outside the loopback interface needs a bearer token "
            "(metrics_token) or a SigV4-signed request.\n",
            [("www-authenticate", "Bearer")],
        )


_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain(status: int, text: str, headers: list[tuple[str, Any]] | None = None) -> Response:
    return Response(
        status, [("content-type", "text/plain; charset=utf-8"), *(headers or [])], text.encode()
    )
