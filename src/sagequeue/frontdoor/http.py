"""Minimal request / response types for the raw ASGI front door (no framework on the
hot path)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sagequeue.domain.policy import KeyPolicy
from sagequeue.frontdoor.sigv4 import AuthContext

Receive = Callable[[], Awaitable[dict[str, Any]]]  # ASGI
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequestTooLarge(Exception):
    pass


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header (name, value) byte pairs as a dict; names must come lower-cased (ASGI
    servers and the HTTP lane give them so). Repeated headers are joined with ","."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1")
        # Clients send and sign non-ASCII header values as UTF-8; bytes that are not
        # UTF-8 survive as surrogates, so the signature check sees the bytes as sent.
        text = value.decode("utf-8", "surrogateescape")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


@dataclass(slots=True)
class Request:
    method: str
    path: str  # percent-decoded
    raw_path: str  # as sent on the wire (percent-encoded)
    query_string: str  # raw
    headers: dict[str, str]  # lower-case names; repeated headers joined with ","
    request_id: str
    receive: Receive
    body: bytes | None = None  # set when the front door read the whole body
    auth: AuthContext | None = None
    # The signing key's policy; None: the key may do everything.
    access: KeyPolicy | None = None
    # The peer's address (from the ASGI scope); None when unknown.
    client_host: str | None = None
    _query: dict[str, str] | None = field(default=None, repr=False)
    _query_list: list[tuple[str, str]] | None = field(default=None, repr=False)
    _body_consumed: bool = field(default=False, repr=False)

    @property
    def query(self) -> dict[str, str]:
        """Decoded query parameters (last value wins; see ``query_list``)."""
        if self._query is None:
            self._query = dict(self.query_list)
        return self._query

    @property
    def query_list(self) -> list[tuple[str, str]]:
        if self._query_list is None:
            self._query_list = parse_qsl(self.query_string, keep_blank_values=True)
        return self._query_list

    def authorize(self, action: str, resource: str) -> None:
        """Raise AccessDenied unless the signing key may do ``action`` on ``resource``."""
        if self.access is not None:
            self.access.check(action, resource)

    @property
    def body_unread(self) -> bool:
        """The request declares a body that nobody has read (nor started to)."""
        if self.body is not None or self._body_consumed:
            return False
        headers = self.headers
        return "transfer-encoding" in headers or headers.get("content-length", "0") not in (
            "",
            "0",
        )

    async def stream(self) -> AsyncIterator[bytes]:
        """The raw body, chunk by chunk as it arrives (never buffered whole)."""
        if self.body is not None:
            if self.body:
                yield self.body
            return
        if self._body_consumed:
            return
        self._body_consumed = True
        more = True
        while more:
            chunk, more = await self._next_chunk()
            if chunk:
                yield chunk

    async def _next_chunk(self) -> tuple[bytes, bool]:
        """One ``http.request`` message: its body bytes, and whether more follow."""
        message = await self.receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        return message.get("body", b""), message.get("more_body", False)

    async def read_body(self, max_bytes: int) -> bytes:
        """Read the whole body; raises RequestTooLarge past ``max_bytes``."""
        if self.body is not None:
            return self.body
        # Reads ``receive`` directly: an async generator per request costs more than
        # the whole body of a typical InvokeEndpointAsync.
        chunks: list[bytes] = []
        size = 0
        more = not self._body_consumed
        self._body_consumed = True
        while more:
            chunk, more = await self._next_chunk()
            size += len(chunk)
            if size > max_bytes:
                raise RequestTooLarge(size)
            if chunk:
                chunks.append(chunk)
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self.body


@dataclass(slots=True)
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    # bytes, or a stream; a streamed body's handler sets Content-Length itself.
    body: bytes | AsyncIterator[bytes] = b""


def json_response(status: int, body: bytes, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = [("content-type", "application/x-amz-json-1.1")]
    if extra:
        headers.extend(extra)
    return Response(status, headers, body)
