"""The HTTP/1.1 server: uvicorn (uvloop + httptools) with a lane for the runtime API.

uvicorn's ASGI cycle costs about as much per request as everything the front door does
for an InvokeEndpointAsync (a scope dict, a cycle object, an Event, the receive/send
messages). Requests under ``/endpoints/`` with a small, whole body therefore skip it:
the protocol below collects the request from httptools' callbacks, hands a ``Request``
straight to ``FrontDoor.respond`` and writes the ``Response`` itself. Every other
request (S3 streams, the control plane, ``Expect: 100-continue``, chunked bodies) goes
through uvicorn unchanged.

The lane takes uvicorn's place for a request by standing in for its request cycle
(``_LaneCycle``), so uvicorn's own pipelining, graceful shutdown and disconnect handling
treat both kinds of request alike.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sagequeue.domain.ids import new_id
from sagequeue.frontdoor.http import Request, Response, decode_headers

if TYPE_CHECKING:
    from sagequeue.frontdoor.asgi import FrontDoor

log = logging.getLogger(__name__)

LANE_PREFIX = b"/endpoints/"
# Larger bodies take uvicorn's streaming path (the runtime API's own Body limit is
# 128,000 bytes; the lane never buffers more than this).
MAX_LANE_BODY = 1024 * 1024

# Header values must not smuggle a line break into the response head.
_UNSAFE_HEADER_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
# The phrases uvicorn's own path writes, so both paths answer alike.
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


class _NoEvent:
    """uvicorn sets its cycle's message event on disconnect; the lane has no waiter."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _LaneCycle:
    """One lane request, in the attributes uvicorn's protocol reads from a cycle."""

    __slots__ = ("body", "disconnected", "keep_alive", "method", "response_complete")

    message_event = _NO_EVENT

    def __init__(self, method: str, keep_alive: bool) -> None:
        self.method = method
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.disconnected = False
        self.response_complete = False


class LaneProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the runtime API's lane (see the module doc)."""

    front_door: ClassVar[FrontDoor]

    def on_message_begin(self) -> None:
        # uvicorn builds the ASGI scope here; the lane builds it only when it passes a
        # request on to uvicorn (``_to_uvicorn``).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._lane: _LaneCycle | None = None

    def on_headers_complete(self) -> None:
        parser = self.parser
        if (
            self.url.startswith(LANE_PREFIX)
            and not self.expect_100_continue
            and (self.cycle is None or self.cycle.response_complete)
            and not parser.should_upgrade()
            and _fits_lane(self.headers)
        ):
            lane = _LaneCycle(
                parser.get_method().decode("ascii"),
                parser.get_http_version() != "1.0" and parser.should_keep_alive(),
            )
            self._lane = lane
            self.cycle = lane  # type: ignore[assignment]
            return
        self._to_uvicorn()

    def _to_uvicorn(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.expect_100_continue = url, expect
        self.headers = headers
        self.scope["headers"] = headers
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        lane = self._lane
        if lane is None:
            super().on_body(body)
        elif not lane.response_complete:
            lane.body.append(body)

    def on_message_complete(self) -> None:
        lane = self._lane
        if lane is None:
            super().on_message_complete()
            return
        self._lane = None
        url = self.url
        raw_target, _, query = url.partition(b"?")
        raw_path = raw_target.decode("latin-1")
        body = lane.body
        request = Request(
            method=lane.method,
            path=unquote(raw_path) if "%" in raw_path else raw_path,
            raw_path=raw_path,
            query_string=query.decode("latin-1"),
            headers=decode_headers(self.headers),
            request_id=new_id(),
            receive=_no_more_body,
            body=body[0] if len(body) == 1 else b"".join(body),
        )
        # A task per request: running the first step at once, inside the parser's
        # callback, measured slower (smaller group commits).
        task = self.loop.create_task(self._answer(lane, request))
        tasks = self.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _answer(self, lane: _LaneCycle, request: Request) -> None:
        transport = self.transport
        head_sent = False
        try:
            response = await self.front_door.respond(request)
            head_only = lane.method == "HEAD"
            body = response.body
            streamed = not isinstance(body, bytes | bytearray | memoryview)
            head, chunked = _response_head(
                response,
                self.server_state.default_headers,
                None if streamed else len(body),  # type: ignore[arg-type]
                lane.keep_alive,
            )
            # The parser may have answered 400 and closed meanwhile (a bad request
            # pipelined behind this one): then there is no one to answer.
            if streamed:
                if not lane.disconnected and not transport.is_closing():
                    transport.write(head)
                head_sent = True
                await self._stream(lane, body, head_only, chunked)  # type: ignore[arg-type]
            elif not lane.disconnected and not transport.is_closing():
                transport.write(head if head_only or not body else head + bytes(body))
        except Exception:
            log.exception("request %s failed while answering", request.request_id)
            lane.keep_alive = False
            # Past the head, the client can only learn of the failure by the close.
            if not head_sent and not lane.disconnected and not transport.is_closing():
                transport.write(_INTERNAL_ERROR)
        lane.response_complete = True
        if not lane.keep_alive:
            transport.close()
        self.on_response_complete()

    async def _stream(self, lane: _LaneCycle, body: Any, head_only: bool, chunked: bool) -> None:
        flow = self.flow
        write = self.transport.write
        try:
            if head_only:
                return
            async for chunk in body:
                if flow.write_paused:
                    await flow.drain()
                if lane.disconnected or self.transport.is_closing():
                    return
                if chunk:
                    write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked and not lane.disconnected:
                write(b"0\r\n\r\n")
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()


# The parts of uvicorn's protocol the lane overrides or calls (uvicorn 0.30 to 0.54).
_UVICORN_HOOKS = (
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
)


def lane_protocol(front_door: FrontDoor) -> type[LaneProtocol] | str:
    """What to give ``uvicorn.Config(http=...)`` for this front door: the lane protocol,
    or plain ``"httptools"`` (everything through ASGI) on a uvicorn whose protocol no
    longer has the hooks the lane builds on."""
    missing = [name for name in _UVICORN_HOOKS if not hasattr(HttpToolsProtocol, name)]
    if missing:
        log.warning("uvicorn's protocol lacks %s: serving without the HTTP lane", missing)
        return "httptools"
    return type("FrontDoorProtocol", (LaneProtocol,), {"front_door": front_door})


def _fits_lane(headers: list[tuple[bytes, bytes]]) -> bool:
    """A body the lane may buffer whole: declared by Content-Length, and small."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            try:
                return int(value) <= MAX_LANE_BODY
            except ValueError:
                return False
    return True  # no body


async def _no_more_body() -> dict[str, Any]:
    # The lane reads the whole body before answering, so nothing is left to receive.
    return {"type": "http.request", "body": b"", "more_body": False}


def _response_head(
    response: Response,
    default_headers: list[tuple[bytes, bytes]],
    content_length: int | None,
    keep_alive: bool,
) -> tuple[bytes, bool]:
    """The status line and headers; and whether the body must be sent chunked (a
    stream whose handler did not declare its length)."""
    status = response.status
    lines = []
    values = []
    has_length = False
    for name, value in response.headers:
        name = name.lower()
        if name == "content-length":
            has_length = True
        lines.append(f"{name}: {value}\r\n")
        values.append(value)
    # One search over all values: none may smuggle a line break into the head.
    if _UNSAFE_HEADER_VALUE.search("".join(values)):
        raise ValueError("unsafe value in a response header")
    chunked = False
    if not has_length:
        if content_length is not None:
            lines.append(f"content-length: {content_length}\r\n")
        elif status not in (204, 304):
            lines.append("transfer-encoding: chunked\r\n")
            chunked = True
    if not keep_alive:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    status_line = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n".encode()
    defaults = b"".join(b"%s: %s\r\n" % pair for pair in default_headers)
    # Values go back out as the bytes they came in as (see decode_headers).
    return status_line + defaults + "".join(lines).encode("utf-8", "surrogateescape"), chunked
