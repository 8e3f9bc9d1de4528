"""SageMaker's asynchronous-endpoint metrics (namespace ``AWS/SageMaker``): their names,
units and dimensions, the per-period aggregates the store keeps, and the statistics
CloudWatch computes from them. Pure: no I/O.

Every process that observes something (the front door counts invocations, workers time
and count what they run, one fleet singleton samples the backlog) adds to per-period
aggregates (sum, count, min, max and, for latencies, histogram bucket counts) held in the
shared store, one row per writer so that no row is written by two processes. Readers
merge the writers' rows. A period is CloudWatch's minute; ``MetricClock`` says how long
it lasts in real time (60 s, or less with a time scale for tests and demos).
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sagequeue.ports import MetricPoint

NAMESPACE = "AWS/SageMaker"
ENDPOINT_DIMENSION = "EndpointName"
VARIANT_DIMENSION = "VariantName"
MINUTE_SECONDS = 60


class Unit(enum.StrEnum):
    NONE = "None"
    COUNT = "Count"
    SECONDS = "Seconds"
    MILLISECONDS = "Milliseconds"
    MICROSECONDS = "Microseconds"


class Kind(enum.Enum):
    COUNTER = "counter"  # events counted (sum of 1s)
    LATENCY = "latency"  # one value per event, with a histogram
    GAUGE = "gauge"  # sampled state of the backlog


# Seconds each unit is worth (for Prometheus, which wants base units).
UNIT_SECONDS = {
    Unit.SECONDS: 1.0,
    Unit.MILLISECONDS: 1e-3,
    Unit.MICROSECONDS: 1e-6,
}

# Upper bounds (seconds) of the latency histogram buckets; a last bucket takes the rest.
# From a millisecond to an hour (InvocationTimeoutSeconds' maximum) and six hours
# (RequestTTLSeconds' maximum, for TimeInBacklog).
LATENCY_BOUNDS_SECONDS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
)
BUCKET_COUNT = len(LATENCY_BOUNDS_SECONDS) + 1


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    unit: Unit
    kind: Kind
    per_variant: bool  # dimensions EndpointName + VariantName; else EndpointName alone
    description: str

    @property
    def dimension_names(self) -> tuple[str, ...]:
        if self.per_variant:
            return (ENDPOINT_DIMENSION, VARIANT_DIMENSION)
        return (ENDPOINT_DIMENSION,)


def _defs(*defs: MetricDef) -> dict[str, MetricDef]:
    return {d.name: d for d in defs}


# SageMaker's documentation ("Monitoring asynchronous endpoints") names and units. The
# queue belongs to the endpoint, so the backlog metrics have no VariantName; the rest are
# published per variant.
METRICS: dict[str, MetricDef] = _defs(
    MetricDef(
        "Invocations",
        Unit.NONE,
        Kind.COUNTER,
        True,
        "InvokeEndpointAsync requests accepted (202).",
    ),
    MetricDef(
        "Invocation4XXErrors",
        Unit.NONE,
        Kind.COUNTER,
        True,
        "InvokeEndpointAsync requests to an existing endpoint refused with a 4xx.",
    ),
    MetricDef(
        "Invocation5XXErrors",
        Unit.NONE,
        Kind.COUNTER,
        True,
        "InvokeEndpointAsync requests to an existing endpoint that failed with a 5xx.",
    ),
    MetricDef(
        "InvocationsPerInstance",
        Unit.NONE,
        Kind.COUNTER,
        True,
        "Accepted requests, each counted as 1/running instances of its variant "
        "(the SageMakerVariantInvocationsPerInstance predefined scaling metric).",
    ),
    MetricDef(
        "InvocationsProcessed",
        Unit.COUNT,
        Kind.COUNTER,
        True,
        "Invocations that ran on a model instance and ended Completed or Failed.",
    ),
    MetricDef(
        "InvocationFailures",
        Unit.COUNT,
        Kind.COUNTER,
        True,
        "Invocations that ended Failed, for any reason.",
    ),
    MetricDef(
        "ExpiredRequests",
        Unit.COUNT,
        Kind.COUNTER,
        True,
        "Requests that ended Expired: queued past RequestTTLSeconds.",
    ),
    MetricDef(
        "RequestDownloadFailures",
        Unit.COUNT,
        Kind.COUNTER,
        True,
        "Invocations that failed because their input could not be read.",
    ),
    MetricDef(
        "ResponseUploadFailures",
        Unit.COUNT,
        Kind.COUNTER,
        True,
        "Invocations that failed because their output could not be written.",
    ),
    MetricDef(
        "ModelLatency",
        Unit.MICROSECONDS,
        Kind.LATENCY,
        True,
        "Time the model instance took to answer.",
    ),
    MetricDef(
        "RequestDownloadLatency",
        Unit.MICROSECONDS,
        Kind.LATENCY,
        True,
        "Time to open the request's input (S3 or https InputLocation).",
    ),
    MetricDef(
        "ResponseUploadLatency",
        Unit.MICROSECONDS,
        Kind.LATENCY,
        True,
        "Time to write the response to the output location.",
    ),
    MetricDef(
        "TimeInBacklog",
        Unit.MILLISECONDS,
        Kind.LATENCY,
        True,
        "Time a request was queued before the run that processed it started.",
    ),
    MetricDef(
        "TotalProcessingTime",
        Unit.MILLISECONDS,
        Kind.LATENCY,
        True,
        "Time from acceptance (202) to the end of processing (result written).",
    ),
    MetricDef(
        "NotificationFailures",
        Unit.COUNT,
        Kind.COUNTER,
        False,
        "Notifications (SNS topics, webhooks) given up after the retry period.",
    ),
    MetricDef(
        "ApproximateBacklogSize",
        Unit.COUNT,
        Kind.GAUGE,
        False,
        "Requests of the endpoint queued or being processed.",
    ),
    MetricDef(
        "ApproximateBacklogSizePerInstance",
        Unit.COUNT,
        Kind.GAUGE,
        False,
        "ApproximateBacklogSize divided by the running instances (by 1 at zero).",
    ),
    MetricDef(
        "ApproximateAgeOfOldestRequest",
        Unit.SECONDS,
        Kind.GAUGE,
        False,
        "Age of the oldest queued request (0 when none is queued).",
    ),
    MetricDef(
        "HasBacklogWithoutCapacity",
        Unit.COUNT,
        Kind.GAUGE,
        False,
        "1 when requests are queued and no instance runs, else 0.",
    ),
    # sagequeue's own (SageMaker publishes no instance counts): DescribeEndpoint's
    # CurrentInstanceCount and DesiredInstanceCount summed over the variants, sampled with
    # the backlog, so that scaling has a history (the console's instance chart).
    MetricDef(
        "CurrentInstanceCount",
        Unit.COUNT,
        Kind.GAUGE,
        False,
        "Model instances running for the endpoint (all variants).",
    ),
    MetricDef(
        "DesiredInstanceCount",
        Unit.COUNT,
        Kind.GAUGE,
        False,
        "Model instances the endpoint's variants ask for (all variants).",
    ),
)


# ======================================================================================
# Time: CloudWatch's minute, possibly sped up
# ======================================================================================


@dataclass(frozen=True, slots=True)
class MetricClock:
    """How CloudWatch time maps to real time. ``time_scale`` > 1 runs periods, alarm
    evaluations and scaling cooldowns that many times faster (tests and demos): a
    60-second period then lasts 60 / time_scale real seconds."""

    time_scale: float = 1.0

    @property
    def minute_ms(self) -> int:
        """Real milliseconds in one stored period (CloudWatch's minute)."""
        return max(1, round(MINUTE_SECONDS * 1000 / self.time_scale))

    def real_seconds(self, cloudwatch_seconds: float) -> float:
        """A duration in API seconds (periods, cooldowns) in real seconds."""
        return cloudwatch_seconds / self.time_scale

    def minute_of(self, epoch_seconds: float) -> int:
        """Start (epoch ms) of the stored period holding this instant."""
        width = self.minute_ms
        return int(epoch_seconds * 1000) // width * width

    def period_ms(self, period_seconds: int) -> int:
        """Real milliseconds of a query period (whole minutes: data is per minute)."""
        minutes = max(1, math.ceil(period_seconds / MINUTE_SECONDS))
        return minutes * self.minute_ms

    @property
    def flush_seconds(self) -> float:
        """How often producers write their aggregates: a few times per period, at most
        every 5 s."""
        return min(5.0, self.minute_ms / 1000 / 4)

    @property
    def sample_seconds(self) -> float:
        """How often the backlog gauges are sampled: several samples per period."""
        return min(10.0, self.minute_ms / 1000 / 4)


# ======================================================================================
# Aggregates
# ======================================================================================


def bucket_index(seconds: float) -> int:
    return bisect.bisect_left(LATENCY_BOUNDS_SECONDS, seconds)


class Accumulator:
    """One series' aggregate for one period, as a producer builds it in memory."""

    __slots__ = ("buckets", "count", "maximum", "minimum", "sum")

    def __init__(self, with_buckets: bool) -> None:
        self.sum = 0.0
        self.count = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.buckets: list[int] | None = [0] * BUCKET_COUNT if with_buckets else None

    def add(self, value: float, seconds: float | None = None) -> None:
        self.sum += value
        self.count += 1
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        if self.buckets is not None and seconds is not None:
            self.buckets[bucket_index(seconds)] += 1

    def add_many(self, total: float, count: float, minimum: float, maximum: float) -> None:
        self.sum += total
        self.count += count
        self.minimum = min(self.minimum, minimum)
        self.maximum = max(self.maximum, maximum)


def merge_points(points: Iterable[MetricPoint]) -> list[MetricPoint]:
    """Points of the same series and period (from several writers) merged into one;
    the result is ordered by (metric, endpoint, variant, period)."""
    merged: dict[tuple[str, str, str, int], MetricPoint] = {}
    for point in points:
        key = (point.metric, point.endpoint_name, point.variant_name, point.period_start)
        have = merged.get(key)
        if have is None:
            merged[key] = MetricPoint(
                point.metric,
                point.endpoint_name,
                point.variant_name,
                point.period_start,
                point.sum,
                point.count,
                point.minimum,
                point.maximum,
                tuple(point.buckets),
            )
        else:
            merged[key] = combine(have, point)
    return [merged[key] for key in sorted(merged)]


def combine(a: MetricPoint, b: MetricPoint) -> MetricPoint:
    """Two aggregates of one series and period as one."""
    return MetricPoint(
        a.metric,
        a.endpoint_name,
        a.variant_name,
        a.period_start,
        a.sum + b.sum,
        a.count + b.count,
        min(a.minimum, b.minimum),
        max(a.maximum, b.maximum),
        add_buckets(a.buckets, b.buckets),
    )


def add_buckets(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    if not a:
        return tuple(b)
    if not b:
        return tuple(a)
    size = max(len(a), len(b))
    return tuple((a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(size))


# ======================================================================================
# Statistics (CloudWatch's)
# ======================================================================================

STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")


def statistic(point: MetricPoint, name: str) -> float | None:
    """A CloudWatch statistic of an aggregate: SampleCount, Average, Sum, Minimum,
    Maximum, or a percentile ``pNN(.NN)`` estimated from the histogram (latencies)."""
    if point.count <= 0:
        return None
    if name == "SampleCount":
        return point.count
    if name == "Sum":
        return point.sum
    if name == "Average":
        return point.sum / point.count
    if name == "Minimum":
        return point.minimum
    if name == "Maximum":
        return point.maximum
    percent = parse_percentile(name)
    if percent is not None:
        return percentile(point, percent)
    return None


def parse_percentile(name: str) -> float | None:
    """The percentage of ``p90`` / ``p99.9`` (None for anything else)."""
    if not name.startswith("p"):
        return None
    try:
        value = float(name[1:])
    except ValueError:
        return None
    if not 0 <= value <= 100 or not math.isfinite(value):
        return None
    return value


def percentile(point: MetricPoint, percent: float) -> float | None:
    """A percentile from the histogram, interpolated within its bucket and clamped to the
    observed minimum and maximum; in the metric's unit."""
    if not point.buckets or point.count <= 0:
        return None
    definition = METRICS.get(point.metric)
    scale = UNIT_SECONDS.get(definition.unit, 1.0) if definition else 1.0
    rank = percent / 100 * sum(point.buckets)
    seen = 0
    for index, count in enumerate(point.buckets):
        if count and seen + count >= rank:
            lower = LATENCY_BOUNDS_SECONDS[index - 1] if index > 0 else 0.0
            upper = (
                LATENCY_BOUNDS_SECONDS[index]
                if index < len(LATENCY_BOUNDS_SECONDS)
                else point.maximum * scale
            )
            fraction = (rank - seen) / count
            value = (lower + (upper - lower) * fraction) / scale
            return min(max(value, point.minimum), point.maximum)
        seen += count
    return point.maximum


# ======================================================================================
# Backlog gauges
# ======================================================================================


@dataclass(frozen=True, slots=True)
class Backlog:
    """One endpoint's queue, as the backlog metrics describe it."""

    queued: int
    in_progress: int
    running_instances: int
    oldest_queued_at: float | None  # epoch seconds
    desired_instances: int = 0

    @property
    def size(self) -> int:
        return self.queued + self.in_progress

    def gauges(self, now: float) -> dict[str, float]:
        size = self.size
        age = max(0.0, now - self.oldest_queued_at) if self.oldest_queued_at else 0.0
        return {
            "ApproximateBacklogSize": float(size),
            "ApproximateBacklogSizePerInstance": size / max(self.running_instances, 1),
            "ApproximateAgeOfOldestRequest": age,
            "HasBacklogWithoutCapacity": 1.0 if size > 0 and self.running_instances == 0 else 0.0,
            "CurrentInstanceCount": float(self.running_instances),
            "DesiredInstanceCount": float(self.desired_instances),
        }
