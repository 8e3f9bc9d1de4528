"""The CloudWatch Logs API subset that reads model logs (JSON 1.1,
``X-Amz-Target: Logs_20140328.<Action>``, SigV4 service ``logs``): DescribeLogGroups,
DescribeLogStreams, GetLogEvents and FilterLogEvents, with CloudWatch's paging tokens
and errors. ``aws logs tail [--follow]`` runs on FilterLogEvents alone.

Inputs are validated against botocore's ``logs`` model; the events come from the shared
store (``LogStore``), where workers on any host write them.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

import msgspec

from sagequeue.config import Settings
from sagequeue.domain.errors import (
    InvalidParameter,
    LogsResourceNotFound,
    ServiceError,
    ServiceUnavailable,
    UnknownOperation,
)
from sagequeue.domain.logs import compile_filter_pattern, log_group_arn, log_stream_arn
from sagequeue.domain.validation import ShapeValidator, raise_if_invalid
from sagequeue.frontdoor.errors import WireProtocol
from sagequeue.frontdoor.http import Request, Response, json_response
from sagequeue.ports import LogEvent, LogPosition, LogQuery, LogStore, LogStreamInfo

TARGET_PREFIX = "Logs_20140328."
MAX_BODY = 1024 * 1024
DEFAULT_DESCRIBE_LIMIT = 50
DEFAULT_EVENTS_LIMIT = 10_000
# A page of events holds at most this much message text (CloudWatch: 1 MB).
MAX_PAGE_BYTES = 1_048_576
# FilterLogEvents reads at most this many events per call to find its matches, and
# says where to go on (a page may hold fewer matches than asked for, or none).
FILTER_SCAN_EVENTS = 10_000
# Days CloudWatch Logs offers as a retention; ours is shown when it is one of them.
_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096)

_GROUP_NOT_FOUND = "The specified log group does not exist."
_STREAM_NOT_FOUND = "The specified log stream does not exist."
_BAD_TOKEN = "The specified nextToken is invalid."


@cache
def _validator(action: str) -> ShapeValidator:
    import botocore.session

    model = botocore.session.get_session().get_service_model("logs")
    return ShapeValidator(model.operation_model(action).input_shape)


class LogsApi:
    """JSON 1.1 wire adapter for model logs in the ``LogStore``."""

    protocol = WireProtocol.JSON
    max_body = MAX_BODY

    def __init__(self, get_store: Callable[[], LogStore | None], settings: Settings) -> None:
        self._get_store = get_store
        self._settings = settings
        self._decoder = msgspec.json.Decoder()
        self._encoder = msgspec.json.Encoder()
        self._actions: dict[
            str, Callable[[LogStore, dict[str, Any]], Awaitable[dict[str, Any]]]
        ] = {
            "DescribeLogGroups": self.describe_log_groups,
            "DescribeLogStreams": self.describe_log_streams,
            "GetLogEvents": self.get_log_events,
            "FilterLogEvents": self.filter_log_events,
        }

    @staticmethod
    def body_too_large() -> ServiceError:
        return InvalidParameter(f"Request body exceeds the maximum of {MAX_BODY} bytes.")

    async def handle(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        action = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        handler = self._actions.get(action)
        if handler is None:
            raise UnknownOperation(
                f"Operation {target or '(no X-Amz-Target)'} is not supported. Supported "
                f"operations: {', '.join(TARGET_PREFIX + name for name in self._actions)}."
            )
        params = self._params(request.body or b"")
        raise_if_invalid(_validator(action).validate(params), InvalidParameter)
        params = _validator(action).prune(params)
        if request.access is not None:
            request.authorize("logs:" + action, self._resource(action, params))
        store = self._get_store()
        if store is None:
            raise ServiceUnavailable(
                "The server is starting; retry shortly.", code="ServiceUnavailableException"
            )
        result = await handler(store, params)
        return json_response(
            200, self._encoder.encode(result), [("x-amzn-requestid", request.request_id)]
        )

    def _params(self, body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            params = self._decoder.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise ServiceError(
                "Request body is not valid JSON.", code="SerializationException", status=400
            ) from None
        if not isinstance(params, dict):
            raise ServiceError(
                "Request body must be a JSON object.", code="SerializationException", status=400
            )
        return params

    def _resource(self, action: str, params: dict[str, Any]) -> str:
        """The ARN a key policy is evaluated against: the log group's (``:*`` form, which
        IAM policies name), its stream's for GetLogEvents, every group's for
        DescribeLogGroups."""
        region, account = self._settings.region, self._settings.account_id
        if action == "DescribeLogGroups":
            return f"arn:aws:logs:{region}:{account}:log-group:*"
        group = self._group(params)
        if action == "GetLogEvents":
            return log_stream_arn(region, account, group, params["logStreamName"])
        return log_group_arn(region, account, group, trailing_star=True)

    def _group(self, params: dict[str, Any]) -> str:
        """The log group named by logGroupName or logGroupIdentifier (a name or ARN)."""
        name, identifier = params.get("logGroupName"), params.get("logGroupIdentifier")
        if name is not None and identifier is not None:
            raise InvalidParameter(
                "LogGroup name and LogGroup identifier are mutually exclusive parameters."
            )
        if identifier is not None:
            return _group_of_identifier(str(identifier))
        if name is None:
            raise InvalidParameter("Either logGroupName or logGroupIdentifier must be specified.")
        return str(name)

    # ------------------------------------------------------------------ groups and streams

    async def describe_log_groups(self, store: LogStore, params: dict[str, Any]) -> dict[str, Any]:
        prefix, pattern = params.get("logGroupNamePrefix"), params.get("logGroupNamePattern")
        if prefix is not None and pattern is not None:
            raise InvalidParameter(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters."
            )
        groups = await store.list_log_groups(prefix or "")
        if pattern:
            groups = [g for g in groups if pattern.lower() in g.group.lower()]
        identifiers = params.get("logGroupIdentifiers")
        if identifiers is not None:
            wanted = {_group_of_identifier(i) for i in identifiers}
            groups = [g for g in groups if g.group in wanted]
        if params.get("logGroupClass") not in (None, "STANDARD"):
            groups = []
        after = _decode_describe_token(params.get("nextToken"))
        if after is not None:
            groups = [g for g in groups if g.group > after]
        limit = params.get("limit") or DEFAULT_DESCRIBE_LIMIT
        page = groups[:limit]
        region, account = self._settings.region, self._settings.account_id
        retention = self._retention_days()
        described = []
        for group in page:
            entry: dict[str, Any] = {
                "logGroupName": group.group,
                "creationTime": group.created_at,
                "metricFilterCount": 0,
                "arn": log_group_arn(region, account, group.group, trailing_star=True),
                "storedBytes": group.stored_bytes,
                "logGroupClass": "STANDARD",
                "logGroupArn": log_group_arn(region, account, group.group, trailing_star=False),
            }
            if retention is not None:
                entry["retentionInDays"] = retention
            described.append(entry)
        result: dict[str, Any] = {"logGroups": described}
        if len(groups) > limit:
            result["nextToken"] = _encode_describe_token(page[-1].group)
        return result

    def _retention_days(self) -> int | None:
        days = self._settings.model_log_retention / 86400
        return int(days) if days in _RETENTION_DAYS else None

    async def describe_log_streams(self, store: LogStore, params: dict[str, Any]) -> dict[str, Any]:
        group = self._group(params)
        prefix = params.get("logStreamNamePrefix")
        by_last_event = params.get("orderBy") == "LastEventTime"
        if by_last_event and prefix is not None:
            raise InvalidParameter("Cannot order by LastEventTime with a logStreamNamePrefix.")
        await self._require_group(store, group)
        streams = await store.list_log_streams(group, prefix or "")
        descending = bool(params.get("descending"))

        def key(stream: LogStreamInfo) -> Any:
            return [stream.last_event_at, stream.stream] if by_last_event else stream.stream

        streams.sort(key=key, reverse=descending)
        after = _decode_describe_token(params.get("nextToken"))
        if after is not None:
            streams = [s for s in streams if (key(s) < after if descending else key(s) > after)]
        limit = params.get("limit") or DEFAULT_DESCRIBE_LIMIT
        page = streams[:limit]
        region, account = self._settings.region, self._settings.account_id
        result: dict[str, Any] = {
            "logStreams": [
                {
                    "logStreamName": stream.stream,
                    "creationTime": stream.created_at,
                    "firstEventTimestamp": stream.first_event_at,
                    "lastEventTimestamp": stream.last_event_at,
                    "lastIngestionTime": stream.last_ingestion_at,
                    "arn": log_stream_arn(region, account, group, stream.stream),
                    "storedBytes": stream.stored_bytes,
                }
                for stream in page
            ]
        }
        if len(streams) > limit:
            result["nextToken"] = _encode_describe_token(key(page[-1]))
        return result

    @staticmethod
    async def _require_group(store: LogStore, group: str) -> None:
        if not any(g.group == group for g in await store.list_log_groups(group)):
            raise LogsResourceNotFound(_GROUP_NOT_FOUND)

    # ------------------------------------------------------------------ events

    async def get_log_events(self, store: LogStore, params: dict[str, Any]) -> dict[str, Any]:
        """One stream's events. Tokens ``f/...`` read on after a position and ``b/...``
        back before one; at either end the token given comes back unchanged (which
        ends botocore's and the CLI's paging)."""
        group = self._group(params)
        stream = params["logStreamName"]
        streams = await store.list_log_streams(group, stream)
        if not any(s.stream == stream for s in streams):
            await self._require_group(store, group)
            raise LogsResourceNotFound(_STREAM_NOT_FOUND)
        limit = params.get("limit") or DEFAULT_EVENTS_LIMIT
        query = LogQuery(
            group, streams=[stream], start=params.get("startTime"), end=params.get("endTime")
        )
        token = params.get("nextToken")
        if token is not None:
            direction, position = _decode_get_token(token)
            if direction == "f":
                query.after = position
            else:
                query.before = position
                query.newest_first = True
        else:
            direction, position = "f", (0, 0)
            query.newest_first = not params.get("startFromHead")
        events = _within_page_bytes(await store.read_log_events(query, limit))
        if query.newest_first:
            events.reverse()
        if events:
            forward = _get_token("f", _position(events[-1]))
            backward = _get_token("b", _position(events[0]))
        elif token is not None and direction == "f":
            forward, backward = token, _get_token("b", (position[0], position[1] + 1))
        elif token is not None:
            forward, backward = _get_token("f", (position[0], position[1] - 1)), token
        else:
            forward, backward = _get_token("f", position), _get_token("b", position)
        return {
            "events": [
                {"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion_time}
                for e in events
            ],
            "nextForwardToken": forward,
            "nextBackwardToken": backward,
        }

    async def filter_log_events(self, store: LogStore, params: dict[str, Any]) -> dict[str, Any]:
        """A group's events, interleaved across its streams by time, that match the
        filter pattern; paged by ``nextToken`` (absent once everything was read)."""
        group = self._group(params)
        names, prefix = params.get("logStreamNames"), params.get("logStreamNamePrefix")
        if names is not None and prefix is not None:
            raise InvalidParameter(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters."
            )
        matches = compile_filter_pattern(params.get("filterPattern"))
        await self._require_group(store, group)
        end = params.get("endTime")
        query = LogQuery(
            group,
            streams=names,
            stream_prefix=prefix or "",
            start=params.get("startTime"),
            end=end + 1 if end is not None else None,  # FilterLogEvents' endTime is inclusive
            after=_decode_filter_token(params.get("nextToken")),
        )
        limit = params.get("limit") or DEFAULT_EVENTS_LIMIT
        filtering = bool((params.get("filterPattern") or "").strip())
        scan = max(limit, FILTER_SCAN_EVENTS) if filtering else limit
        scanned = await store.read_log_events(query, scan)
        found: list[LogEvent] = []
        size = 0
        last: LogEvent | None = None
        for event in scanned:
            if len(found) >= limit:
                break
            if matches(event.message):
                size += len(event.message)
                if found and size > MAX_PAGE_BYTES:
                    break
                found.append(event)
            last = event
        result: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": e.stream,
                    "timestamp": e.timestamp,
                    "message": e.message,
                    "ingestionTime": e.ingestion_time,
                    "eventId": f"{e.timestamp:020d}{e.seq:036d}",
                }
                for e in found
            ],
            "searchedLogStreams": [],
        }
        # More may follow when the read was cut at ``scan`` or the page stopped early.
        more = len(scanned) == scan or (last is not None and last is not scanned[-1])
        if more and last is not None:
            result["nextToken"] = _encode_filter_token(_position(last))
        return result


# ------------------------------------------------------------------------ helpers


def _group_of_identifier(identifier: str) -> str:
    """A log group name from a name or an ARN (``arn:aws:logs:r:a:log-group:NAME[:*]``)."""
    if not identifier.startswith("arn:"):
        return identifier
    marker = ":log-group:"
    if marker not in identifier:
        raise InvalidParameter(f"Invalid log group identifier: {identifier}")
    name = identifier.split(marker, 1)[1]
    return name.removesuffix(":*")


def _position(event: LogEvent) -> LogPosition:
    return (event.timestamp, event.seq)


def _within_page_bytes(events: list[LogEvent]) -> list[LogEvent]:
    """The leading events whose messages fit in a page (at least one)."""
    size = 0
    for index, event in enumerate(events):
        size += len(event.message)
        if index and size > MAX_PAGE_BYTES:
            return events[:index]
    return events


def _get_token(direction: str, position: LogPosition) -> str:
    return f"{direction}/{max(position[0], 0):020d}{max(position[1], 0):020d}"


def _decode_get_token(token: str) -> tuple[str, LogPosition]:
    direction, _, digits = token.partition("/")
    if direction not in ("f", "b") or len(digits) != 40 or not digits.isascii():
        raise InvalidParameter(_BAD_TOKEN)
    if not digits.isdigit():
        raise InvalidParameter(_BAD_TOKEN)
    return direction, (int(digits[:20]), int(digits[20:]))


def _encode_filter_token(position: LogPosition) -> str:
    raw = msgspec.json.encode({"t": position[0], "s": position[1]})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_filter_token(token: str | None) -> LogPosition | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = msgspec.json.decode(raw)
        timestamp, seq = decoded["t"], decoded["s"]
    except (ValueError, TypeError, KeyError, msgspec.DecodeError):
        raise InvalidParameter(_BAD_TOKEN) from None
    if not (isinstance(timestamp, int) and isinstance(seq, int)):
        raise InvalidParameter(_BAD_TOKEN)
    return (timestamp, seq)


def _encode_describe_token(key: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode({"k": key})).decode().rstrip("=")


def _decode_describe_token(token: str | None) -> Any:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = msgspec.json.decode(raw)["k"]
    except (ValueError, TypeError, KeyError, msgspec.DecodeError):
        raise InvalidParameter(_BAD_TOKEN) from None
    if not (isinstance(key, str) or (isinstance(key, list) and len(key) == 2)):
        raise InvalidParameter(_BAD_TOKEN)
    return key
