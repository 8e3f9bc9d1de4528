"""A small HTTP/1.1 client on asyncio streams (one connection per request), enough for
the SageMaker container contract and for fetching https:// InputLocations."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class HttpError(Exception):
    """The request could not be made or the answer could not be read."""


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body_stream: AsyncIterator[bytes]
    _writer: asyncio.StreamWriter | None = field(default=None, repr=False)

    async def read(self, limit: int | None = None) -> bytes:
        """The body, or its first ``limit`` bytes (then the connection is closed)."""
        parts: list[bytes] = []
        total = 0
        try:
            async for chunk in self.body_stream:
                if limit is not None and total + len(chunk) >= limit:
                    parts.append(chunk[: limit - total])
                    break
                parts.append(chunk)
                total += len(chunk)
        finally:
            await self.close()
        return b"".join(parts)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http(s) URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


async def request(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | AsyncIterator[bytes] | None = None,
    content_length: int | None = None,
) -> HttpResponse:
    """Send a request; the body is streamed (chunked when its length is unknown)."""
    scheme, host, port, path = split_url(url)
    context = ssl.create_default_context() if scheme == "https" else None
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=2**20)
    except OSError as exc:
        raise HttpError(f"cannot connect to {host}:{port}: {exc}") from None
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    chunked = False
    if isinstance(body, bytes):
        lines.append(f"Content-Length: {len(body)}")
    elif body is not None:
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        else:
            chunked = True
            lines.append("Transfer-Encoding: chunked")
    elif method in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if isinstance(body, bytes):
            writer.write(body)
        elif body is not None:
            async for chunk in body:
                if not chunk:
                    continue
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise HttpError(f"{host}:{port} answered no HTTP status line")
        status = int(parts[1])
        response_headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        writer.close()
        raise HttpError(f"{method} {url} failed: {exc}") from None
    return HttpResponse(status, response_headers, _body(reader, response_headers), writer)


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The body's bytes as they come; HttpError when it is malformed or cut short."""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readline()
                size = _chunk_size(size_line)
                if size == 0:
                    await reader.readline()
                    return
                async for chunk in _exactly(reader, size, "connection closed inside a chunk"):
                    yield chunk
                await reader.readline()
        elif "content-length" in headers:
            declared = headers["content-length"]
            if not declared.isdigit():
                raise HttpError(f"invalid Content-Length {declared[:40]!r}")
            async for chunk in _exactly(
                reader, int(declared), "connection closed before the end of the body"
            ):
                yield chunk
        else:
            while chunk := await reader.read(1024 * 1024):
                yield chunk
    except (OSError, ValueError) as exc:  # reset connections, over-long lines
        raise HttpError(f"reading the body failed: {exc}") from None


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    if not text or len(text) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in text):
        raise HttpError(f"invalid chunk size line {line[:40]!r}")
    return int(text, 16)


async def _exactly(
    reader: asyncio.StreamReader, size: int, closed_early: str
) -> AsyncIterator[bytes]:
    """The next ``size`` bytes, as they come; HttpError(closed_early) if the stream ends
    before them."""
    remaining = size
    while remaining:
        chunk = await reader.read(min(remaining, 1024 * 1024))
        if not chunk:
            raise HttpError(closed_early)
        remaining -= len(chunk)
        yield chunk
