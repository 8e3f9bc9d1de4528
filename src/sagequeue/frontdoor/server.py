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

The protocol also enforces the HTTP limits (``HttpLimits``), for both kinds of request
and before any authentication: the size and number of header fields (431 beyond), the
time to receive a request head (slowloris) and to receive each part of a body, and the
number of open connections (503 and close beyond). docs/security.md lists them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sagequeue.domain.ids import new_id
from sagequeue.domain.invocation import MAX_INLINE_BODY_BYTES
from sagequeue.domain.validation import wire_int
from sagequeue.frontdoor.http import Request, Response, decode_headers

if TYPE_CHECKING:
    from sagequeue.frontdoor.asgi import FrontDoor

log = logging.getLogger(__name__)

LANE_PREFIX = b"/endpoints/"
# The lane buffers a body whole before the signature is checked, so it takes no body
# longer than the runtime API accepts (InvokeEndpointAsync's Body limit); longer ones
# take uvicorn's path, where the front door refuses them from Content-Length unread.
MAX_LANE_BODY = MAX_INLINE_BODY_BYTES
# After a refusal the server stops reading requests but drains what the client still
# sends for this long (or this much), so that the client reads the answer rather than
# a connection reset.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 4 * 1024 * 1024
# File descriptors kept free beside the connections (store, logs, model instances).
FD_HEADROOM = 256


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Limits every connection is held to before any request is authenticated."""

    max_header_bytes: int = 64 * 1024  # request line + header fields
    max_header_count: int = 256
    header_timeout: float = 20.0  # to receive a whole head (from its first byte)
    body_timeout: float = 30.0  # without a byte while a body is being received
    max_connections: int = 1024


# Header values must not smuggle a line break into the response head.
_UNSAFE_HEADER_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
# The phrases uvicorn's own path writes, so both paths answer alike.
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


def _plain_response(status: int, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


_HEADERS_TOO_LARGE = _plain_response(431, "Request header fields too large")
_TOO_MANY_CONNECTIONS = _plain_response(503, "Too many connections")


class _HeadersTooLarge(Exception):
    """Raised inside a parser callback to stop parsing a head past the limits."""


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
    """uvicorn's httptools protocol with the runtime API's lane and the HTTP limits (see
    the module doc)."""

    front_door: ClassVar[FrontDoor]
    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the current head seen so far: counted per read while the head is
        # incomplete, exactly per field once the parser reports them.
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._in_body = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_body_at = 0.0
        self._headers_too_large = False
        self._lingering = -1  # bytes drained after a refusal; -1: not lingering

    # -------------------------------------------------------------- connection limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Refused before anything is read; the close frees the descriptor at once.
            log.warning("refused a connection: %d open", len(self.connections) - 1)
            transport.write(_TOO_MANY_CONNECTIONS)
            transport.close()
            return
        # A connection that never sends a whole head is closed after header_timeout.
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        # uvicorn asks every connection to finish at a graceful stop: long-lived streams
        # (event feeds) end then instead of holding the stop up to its timeout.
        self.front_door.begin_shutdown()
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._lingering >= 0:
            self._lingering += len(data)
            if self._lingering > LINGER_MAX_BYTES:
                self.transport.close()
            return
        limits = self.limits
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing() or self._lingering >= 0:
            return
        if self._in_head:
            if self._head_bytes > limits.max_header_bytes:
                self._refuse(_HEADERS_TOO_LARGE)
                return
            if self._head_bytes and self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_timed_out)
        elif self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._in_body:
            self._last_body_at = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(limits.body_timeout, self._body_timed_out)
        elif self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self._refuse(_HEADERS_TOO_LARGE)
        else:
            self._refuse(_plain_response(400, msg))

    def _refuse(self, response: bytes) -> None:
        """Answer and stop: no more requests are parsed on this connection. What the
        client still sends is drained for a moment, so that it reads the answer."""
        self._cancel_timers()
        transport = self.transport
        transport.write(response)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the request in progress gets no answer
        try:
            transport.write_eof()
        except (NotImplementedError, OSError, RuntimeError):
            transport.close()
            return
        self._lingering = 0
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def eof_received(self) -> None:
        if self._lingering >= 0:
            self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is still being sent: the client may wait for it before it
            # sends the rest of its next request.
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._head_timed_out
            )
            return
        log.debug("closed a connection that did not send a request head in time")
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._in_body:
            return
        idle = self.loop.time() - self._last_body_at
        if self.flow.read_paused or idle < self.limits.body_timeout:
            # Paused by the server (the body is consumed slowly), or data came lately.
            delay = self.limits.body_timeout - (0 if self.flow.read_paused else idle)
            self._body_timer = self.loop.call_later(delay, self._body_timed_out)
            return
        log.debug("closed a connection whose request body stalled")
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    # -------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        # uvicorn builds the ASGI scope here; the lane builds it only when it passes a
        # request on to uvicorn (``_to_uvicorn``).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._lane: _LaneCycle | None = None
        self._header_count = 0
        self._field_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._field_bytes += len(url)
        if self._field_bytes > self.limits.max_header_bytes:
            self._headers_too_large = True
            raise _HeadersTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._field_bytes += len(name) + len(value) + 4
        limits = self.limits
        if self._header_count > limits.max_header_count or (
            self._field_bytes > limits.max_header_bytes
        ):
            self._headers_too_large = True
            raise _HeadersTooLarge
        # uvicorn's own on_header, inlined (this runs for every header of every request).
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._in_body = True
        # The head came in time. (A head that arrives whole with its body in one read
        # never leaves data_received "in the head", which would otherwise cancel it.)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
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
        self._in_body = False
        self._in_head = True
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
            whole = body if isinstance(body, bytes | bytearray | memoryview) else None
            streamed = whole is None
            head, chunked, lane.keep_alive = _response_head(
                response,
                self.server_state.default_headers,
                None if whole is None else len(whole),
                lane.keep_alive,
            )
            # The parser may have answered 400 and closed meanwhile (a bad request
            # pipelined behind this one): then there is no one to answer.
            if streamed:
                if not lane.disconnected and not transport.is_closing():
                    transport.write(head)
                head_sent = True
                await self._stream(lane, body, head_only, chunked)
            elif not lane.disconnected and not transport.is_closing():
                assert whole is not None
                transport.write(head if head_only or not whole else head + bytes(whole))
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


# The parts of uvicorn's protocol the lane and the limits override or call (uvicorn 0.30
# to 0.54).
_UVICORN_HOOKS = (
    "connection_made",
    "data_received",
    "send_400_response",
    "on_url",
    "on_header",
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "shutdown",
)


def lane_protocol(
    front_door: FrontDoor, limits: HttpLimits | None = None
) -> type[LaneProtocol] | str:
    """What to give ``uvicorn.Config(http=...)`` for this front door: the lane protocol,
    or plain ``"httptools"`` (everything through ASGI) on a uvicorn whose protocol no
    longer has the hooks the lane builds on."""
    missing = [name for name in _UVICORN_HOOKS if not hasattr(HttpToolsProtocol, name)]
    if missing:
        log.warning(
            "uvicorn's protocol lacks %s: serving without the HTTP lane and its limits", missing
        )
        return "httptools"
    return type(
        "FrontDoorProtocol",
        (LaneProtocol,),
        {"front_door": front_door, "limits": limits or HttpLimits()},
    )


def raise_file_limit(max_connections: int) -> int:
    """Raise the process's open-file limit to fit ``max_connections`` (and headroom) if
    the hard limit allows; returns the connection cap that fits. At the descriptor limit
    a server can no longer accept even to refuse, so the cap must stay below it."""
    try:
        import resource
    except ImportError:  # not POSIX
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        fitting = max(16, soft - FD_HEADROOM)
        log.warning(
            "the open-file limit (%d) fits %d connections, not max_connections %d",
            soft,
            fitting,
            max_connections,
        )
        return fitting
    return max_connections


def _fits_lane(headers: list[tuple[bytes, bytes]]) -> bool:
    """A body the lane may buffer whole: declared by Content-Length, and small."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            try:
                return wire_int(value.decode("latin-1")) <= MAX_LANE_BODY
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
) -> tuple[bytes, bool, bool]:
    """The status line and headers; whether the body must be sent chunked (a stream
    whose handler did not declare its length); and whether to keep the connection (the
    response may ask to close it)."""
    status = response.status
    lines = []
    values = []
    has_length = False
    for name, value in response.headers:
        name = name.lower()
        if name == "content-length":
            has_length = True
        elif name == "connection":
            if "close" in value.lower():
                keep_alive = False
            continue  # written once, below
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
    head = status_line + defaults + "".join(lines).encode("utf-8", "surrogateescape")
    return head, chunked, keep_alive
