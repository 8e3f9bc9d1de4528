"""CloudWatch operations for the ``AWS/SageMaker`` namespace: metric queries
(GetMetricData, GetMetricStatistics, ListMetrics) read the shared MetricsStore; alarms
(PutMetricAlarm, DescribeAlarms, DeleteAlarms) are documents in the MetadataStore, which
the fleet's alarm evaluator (sagequeue.autoscaling.autoscaler) moves between states.

Inputs arrive decoded from any of CloudWatch's wire protocols (timestamps as epoch
seconds) and are validated against botocore's ``cloudwatch`` model; errors and messages
are CloudWatch's.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Any, Protocol

from sagequeue.domain.alarms import COMPARISONS, AlarmState
from sagequeue.domain.errors import (
    CloudWatchNotFound,
    InvalidNextToken,
    InvalidParameterCombination,
    InvalidParameterValue,
    LimitExceeded,
    MissingParameter,
    ServiceUnavailable,
    UnknownOperation,
)
from sagequeue.domain.metrics import (
    ENDPOINT_DIMENSION,
    METRICS,
    NAMESPACE,
    VARIANT_DIMENSION,
    MetricClock,
    combine,
    parse_percentile,
    statistic,
)
from sagequeue.domain.validation import ShapeValidator, validation_message
from sagequeue.ports import MetadataStore, MetricPoint, MetricsStore, Resource, ResourceKind

MAX_DATAPOINTS = 1440  # GetMetricStatistics' limit per call
MAX_ALARMS = 5000
_UPDATE_ATTEMPTS = 20
_HIGH_RESOLUTION_PERIODS = (1, 5, 10, 30)
_ALARM_PERIODS = (10, 20, 30)


class CloudWatchStore(MetricsStore, MetadataStore, Protocol):
    """Metrics to read; alarm documents."""


@cache
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("cloudwatch")


@cache
def _validator(action: str) -> ShapeValidator:
    return ShapeValidator(_model().operation_model(action).input_shape)


def alarm_key(name: str) -> str:
    """The store key of an alarm: alarm names are case-sensitive, the store's are not."""
    return name.encode().hex()


def alarm_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{name}"


def public_alarm(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def series_of(metric: dict[str, Any]) -> tuple[str, str] | None:
    """(endpoint, variant) of a metric ``{Namespace, MetricName, Dimensions}`` when it
    names one of this server's series exactly; None otherwise (no data)."""
    if metric.get("Namespace") != NAMESPACE:
        return None
    definition = METRICS.get(str(metric.get("MetricName")))
    if definition is None:
        return None
    dimensions = {d.get("Name"): d.get("Value") for d in metric.get("Dimensions") or []}
    if set(dimensions) != set(definition.dimension_names):
        return None
    endpoint = dimensions[ENDPOINT_DIMENSION]
    variant = dimensions.get(VARIANT_DIMENSION, "")
    if not isinstance(endpoint, str) or not isinstance(variant, str):
        return None
    return endpoint, variant


def bucket_points(points: Sequence[MetricPoint], period_ms: int) -> dict[int, MetricPoint]:
    """Per-minute aggregates of one series merged into periods of ``period_ms`` (aligned
    on multiples of it since the epoch), by period start."""
    periods: dict[int, MetricPoint] = {}
    for point in points:
        begin = point.period_start // period_ms * period_ms
        have = periods.get(begin)
        moved = MetricPoint(
            point.metric,
            point.endpoint_name,
            point.variant_name,
            begin,
            point.sum,
            point.count,
            point.minimum,
            point.maximum,
            point.buckets,
        )
        periods[begin] = moved if have is None else combine(have, moved)
    return periods


class CloudWatch:
    def __init__(
        self,
        store: CloudWatchStore,
        *,
        region: str,
        account_id: str,
        metric_clock: MetricClock,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._region = region
        self._account_id = account_id
        self.metric_clock = metric_clock
        self._clock = clock
        self._actions: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "GetMetricData": self.get_metric_data,
            "GetMetricStatistics": self.get_metric_statistics,
            "ListMetrics": self.list_metrics,
            "PutMetricAlarm": self.put_metric_alarm,
            "DescribeAlarms": self.describe_alarms,
            "DeleteAlarms": self.delete_alarms,
        }

    @property
    def actions(self) -> list[str]:
        return list(self._actions)

    @staticmethod
    def model() -> Any:
        return _model()

    async def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = self._actions.get(action)
        if handler is None:
            raise UnknownOperation(
                f"Operation {action} is not supported. Supported operations: "
                + ", ".join(self._actions)
                + ".",
                code="InvalidAction",
            )
        validator = _validator(action)
        violations = validator.validate(params)
        if violations:
            missing = [v for v in violations if v.endswith("Member must not be null")]
            if missing and len(missing) == len(violations):
                name = missing[0].split("'")[1]
                raise MissingParameter(f"The parameter {name[:1].upper() + name[1:]} is required.")
            raise InvalidParameterValue(validation_message(violations))
        return await handler(validator.prune(params))

    # ------------------------------------------------------------------ metrics

    def _period_ms(self, period: Any, name: str = "Period") -> int:
        if not isinstance(period, int) or period < 1:
            raise InvalidParameterValue(f"The parameter {name} must be a positive integer.")
        if period % 60 and period not in _HIGH_RESOLUTION_PERIODS:
            raise InvalidParameterValue(
                f"The parameter {name} must be 1, 5, 10, 30 or a multiple of 60."
            )
        return self.metric_clock.period_ms(period)

    @staticmethod
    def _time_range(params: dict[str, Any]) -> tuple[int, int]:
        start, end = params["StartTime"], params["EndTime"]
        if start >= end:
            raise InvalidParameterValue(
                "The parameter StartTime must be less than the parameter EndTime."
            )
        return int(start * 1000), int(end * 1000)

    async def _series(
        self, metric: dict[str, Any], start_ms: int, end_ms: int, period_ms: int, unit: Any
    ) -> dict[int, MetricPoint]:
        series = series_of(metric)
        if series is None:
            return {}
        name = str(metric["MetricName"])
        if unit is not None and unit != METRICS[name].unit:
            return {}
        # Periods are aligned on multiples of the period: the one holding StartTime
        # counts whole.
        first = start_ms // period_ms * period_ms
        points = await self._store.read_metrics(
            first, end_ms, metrics=[name], endpoint_name=series[0]
        )
        chosen = [p for p in points if p.variant_name == series[1]]
        return bucket_points(chosen, period_ms)

    async def get_metric_statistics(self, params: dict[str, Any]) -> dict[str, Any]:
        statistics = params.get("Statistics") or []
        extended = params.get("ExtendedStatistics") or []
        if not statistics and not extended:
            raise MissingParameter(
                "Must specify either the Statistics or the ExtendedStatistics parameter."
            )
        if statistics and extended:
            raise InvalidParameterCombination(
                "The parameters Statistics and ExtendedStatistics are mutually exclusive."
            )
        for name in extended:
            if parse_percentile(name) is None:
                raise InvalidParameterValue(
                    f"The value {name} for parameter ExtendedStatistics is not supported."
                )
        start_ms, end_ms = self._time_range(params)
        period_ms = self._period_ms(params["Period"])
        requested = (end_ms - start_ms) // period_ms
        if requested > MAX_DATAPOINTS:
            raise InvalidParameterCombination(
                f"You have requested up to {requested} datapoints, which exceeds the limit "
                f"of {MAX_DATAPOINTS}. You may reduce the datapoints requested by "
                "increasing Period, or decreasing the time range."
            )
        periods = await self._series(params, start_ms, end_ms, period_ms, params.get("Unit"))
        unit = str(METRICS[params["MetricName"]].unit) if periods else None
        datapoints = []
        for begin, point in sorted(periods.items()):
            datapoint: dict[str, Any] = {"Timestamp": begin / 1000, "Unit": unit}
            for name in statistics:
                value = statistic(point, name)
                if value is not None:
                    datapoint[name] = value
            if extended:
                datapoint["ExtendedStatistics"] = {
                    name: value
                    for name in extended
                    if (value := statistic(point, name)) is not None
                }
            datapoints.append(datapoint)
        return {"Label": params["MetricName"], "Datapoints": datapoints}

    async def get_metric_data(self, params: dict[str, Any]) -> dict[str, Any]:
        queries = params["MetricDataQueries"]
        start_ms, end_ms = self._time_range(params)
        ids = [q["Id"] for q in queries]
        if len(set(ids)) != len(ids):
            raise InvalidParameterValue(
                "The values for parameter Id in MetricDataQueries are not unique."
            )
        descending = (params.get("ScanBy") or "TimestampDescending") == "TimestampDescending"
        limit = params.get("MaxDatapoints")
        offset = _decode_token(params.get("NextToken"))
        results = []
        for query in queries:
            if query.get("Expression") is not None:
                raise InvalidParameterValue(
                    f"The metric math expression of query {query['Id']} is not supported: "
                    "this server evaluates MetricStat queries only."
                )
            stat = query.get("MetricStat")
            if stat is None:
                raise MissingParameter(
                    f"The query {query['Id']} must have a MetricStat or an Expression."
                )
            period_ms = self._period_ms(stat["Period"], "MetricStat.Period")
            name = stat["Stat"]
            if name not in ("SampleCount", "Average", "Sum", "Minimum", "Maximum") and (
                parse_percentile(name) is None
            ):
                raise InvalidParameterValue(f"The value {name} for parameter Stat is not valid.")
            periods = await self._series(
                stat["Metric"], start_ms, end_ms, period_ms, stat.get("Unit")
            )
            values = [
                (begin / 1000, value)
                for begin, point in sorted(periods.items(), reverse=descending)
                if (value := statistic(point, name)) is not None
            ]
            if query.get("ReturnData", True) is False:
                continue
            results.append(
                {
                    "Id": query["Id"],
                    "Label": query.get("Label") or stat["Metric"]["MetricName"],
                    "Timestamps": [t for t, _ in values],
                    "Values": [v for _, v in values],
                    "StatusCode": "Complete",
                }
            )
        if limit is not None or offset:
            return _page_datapoints(results, offset, limit)
        return {"MetricDataResults": results, "Messages": []}

    async def list_metrics(self, params: dict[str, Any]) -> dict[str, Any]:
        namespace = params.get("Namespace")
        wanted_name = params.get("MetricName")
        filters = params.get("Dimensions") or []
        if namespace not in (None, NAMESPACE):
            return {"Metrics": []}
        totals = await self._store.metric_totals()
        recent: set[tuple[str, str, str]] | None = None
        if params.get("RecentlyActive") == "PT3H":
            now_ms = int(self._clock() * 1000)
            window = now_ms - int(self.metric_clock.real_seconds(3 * 3600) * 1000)
            recent = {
                (p.metric, p.endpoint_name, p.variant_name)
                for p in await self._store.read_metrics(window, now_ms + 1)
            }
        metrics = []
        for point in totals:
            definition = METRICS.get(point.metric)
            if definition is None or (wanted_name and point.metric != wanted_name):
                continue
            if (
                recent is not None
                and (point.metric, point.endpoint_name, point.variant_name) not in recent
            ):
                continue
            dimensions = [{"Name": ENDPOINT_DIMENSION, "Value": point.endpoint_name}]
            if definition.per_variant:
                dimensions.append({"Name": VARIANT_DIMENSION, "Value": point.variant_name})
            present = {d["Name"]: d["Value"] for d in dimensions}
            if any(
                f.get("Name") not in present
                or (f.get("Value") is not None and present[f["Name"]] != f["Value"])
                for f in filters
            ):
                continue
            metrics.append(
                {"Namespace": NAMESPACE, "MetricName": point.metric, "Dimensions": dimensions}
            )
        start = _decode_token(params.get("NextToken"))
        page = metrics[start : start + 500]
        result: dict[str, Any] = {"Metrics": page}
        if start + 500 < len(metrics):
            result["NextToken"] = _encode_token(start + 500)
        return result

    # ------------------------------------------------------------------ alarms

    def _check_alarm(self, params: dict[str, Any]) -> None:
        if params.get("Metrics"):
            raise InvalidParameterValue(
                "Alarms on metric math (the Metrics parameter) are not supported: give "
                "MetricName, Namespace, Statistic and Period."
            )
        for name in (
            "MetricName",
            "Namespace",
            "Period",
            "EvaluationPeriods",
            "ComparisonOperator",
        ):
            if params.get(name) is None:
                raise MissingParameter(f"The parameter {name} is required.")
        if params.get("Statistic") is None and params.get("ExtendedStatistic") is None:
            raise MissingParameter(
                "Must specify either the Statistic or the ExtendedStatistic parameter."
            )
        if params.get("Statistic") is not None and params.get("ExtendedStatistic") is not None:
            raise InvalidParameterCombination(
                "The parameters Statistic and ExtendedStatistic are mutually exclusive."
            )
        extended = params.get("ExtendedStatistic")
        if extended is not None and parse_percentile(extended) is None:
            raise InvalidParameterValue(
                f"The value {extended} for parameter ExtendedStatistic is not supported."
            )
        if params.get("Threshold") is None:
            raise MissingParameter("The parameter Threshold is required.")
        if params["ComparisonOperator"] not in COMPARISONS:
            raise InvalidParameterValue(
                f"The value {params['ComparisonOperator']} for parameter ComparisonOperator "
                "is not supported by metric alarms (anomaly detection needs ThresholdMetricId)."
            )
        period = params["Period"]
        if period % 60 and period not in _ALARM_PERIODS:
            raise InvalidParameterValue(
                "The parameter Period must be 10, 20, 30 or a multiple of 60."
            )
        evaluations = params["EvaluationPeriods"]
        if period * evaluations > 7 * 86400:
            raise InvalidParameterValue(
                "The parameter EvaluationPeriods multiplied by Period must not exceed 604800 "
                "seconds (7 days)."
            )
        to_alarm = params.get("DatapointsToAlarm")
        if to_alarm is not None and to_alarm > evaluations:
            raise InvalidParameterCombination(
                "DatapointsToAlarm must be less than or equal to EvaluationPeriods."
            )

    async def put_metric_alarm(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check_alarm(params)
        name = params["AlarmName"]
        now = self._clock()
        config = {
            key: value
            for key, value in params.items()
            if key not in ("Tags",) and value is not None
        }
        config.setdefault("ActionsEnabled", True)
        for key in ("OKActions", "AlarmActions", "InsufficientDataActions", "Dimensions"):
            config.setdefault(key, [])
        config.setdefault("DatapointsToAlarm", params["EvaluationPeriods"])
        config.setdefault("TreatMissingData", "missing")
        config["AlarmArn"] = alarm_arn(self._region, self._account_id, name)
        config["AlarmConfigurationUpdatedTimestamp"] = now
        for _ in range(_UPDATE_ATTEMPTS):
            existing = await self._store.get_resource(ResourceKind.ALARM, alarm_key(name))
            if existing is None:
                if len(await self._store.list_resources(ResourceKind.ALARM)) >= MAX_ALARMS:
                    raise LimitExceeded(f"The maximum number of alarms ({MAX_ALARMS}) is reached.")
                doc = {
                    **config,
                    "StateValue": str(AlarmState.INSUFFICIENT_DATA),
                    "StateReason": "Unchecked: Initial alarm creation",
                    "StateUpdatedTimestamp": now,
                    "StateTransitionedTimestamp": now,
                }
                if await self._store.create_resource(
                    Resource(ResourceKind.ALARM, alarm_key(name), doc, created_at=now)
                ):
                    return {}
                continue
            state = {
                k: v
                for k, v in existing.doc.items()
                if k.startswith("State") or k == "_LastActionsAt"
            }
            existing.doc = {**config, **state}
            if await self._store.update_resource(existing):
                return {}
        raise ServiceUnavailable(f"Alarm {name} is being changed concurrently; retry.")

    async def describe_alarms(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("ChildrenOfAlarmName") or params.get("ParentsOfAlarmName"):
            return {"MetricAlarms": [], "CompositeAlarms": []}
        types = params.get("AlarmTypes") or ["MetricAlarm"]
        docs = [r.doc for r in await self._store.list_resources(ResourceKind.ALARM)]
        names = params.get("AlarmNames")
        if names:
            if params.get("AlarmNamePrefix"):
                raise InvalidParameterCombination(
                    "The parameters AlarmNames and AlarmNamePrefix are mutually exclusive."
                )
            docs = [d for d in docs if d["AlarmName"] in names]
        prefix = params.get("AlarmNamePrefix")
        if prefix:
            docs = [d for d in docs if d["AlarmName"].startswith(prefix)]
        state = params.get("StateValue")
        if state:
            docs = [d for d in docs if d.get("StateValue") == state]
        action_prefix = params.get("ActionPrefix")
        if action_prefix:
            docs = [
                d
                for d in docs
                if any(
                    a.startswith(action_prefix)
                    for key in ("OKActions", "AlarmActions", "InsufficientDataActions")
                    for a in d.get(key) or []
                )
            ]
        docs.sort(key=lambda d: d["AlarmName"])
        if "MetricAlarm" not in types:
            docs = []
        size = params.get("MaxRecords") or 50
        start = _decode_token(params.get("NextToken"))
        result: dict[str, Any] = {
            "MetricAlarms": [public_alarm(d) for d in docs[start : start + size]],
            "CompositeAlarms": [],
        }
        if start + size < len(docs):
            result["NextToken"] = _encode_token(start + size)
        return result

    async def delete_alarms(self, params: dict[str, Any]) -> dict[str, Any]:
        names = params["AlarmNames"]
        missing = [
            name
            for name in names
            if await self._store.get_resource(ResourceKind.ALARM, alarm_key(name)) is None
        ]
        if missing:
            # Nothing is deleted when one of the names is unknown.
            raise CloudWatchNotFound(f"{missing[0]} does not exist")
        for name in names:
            await self._store.delete_resource(ResourceKind.ALARM, alarm_key(name))
        return {}


def _page_datapoints(
    results: list[dict[str, Any]], offset: int, limit: int | None
) -> dict[str, Any]:
    """GetMetricData's MaxDatapoints / NextToken over all results together."""
    flat = [
        (i, t, v)
        for i, r in enumerate(results)
        for t, v in zip(r["Timestamps"], r["Values"], strict=True)
    ]
    end = len(flat) if limit is None else offset + limit
    window = flat[offset:end]
    for result in results:
        result["Timestamps"], result["Values"] = [], []
    for index, stamp, value in window:
        results[index]["Timestamps"].append(stamp)
        results[index]["Values"].append(value)
    page: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
    if end < len(flat):
        for result in results:
            result["StatusCode"] = "PartialData"
        page["NextToken"] = _encode_token(end)
    return page


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_token(token: Any) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(str(token).encode()).decode().partition(":")
        if kind == "offset" and value.isdigit():
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidNextToken("The service couldn't process the NextToken.")
