"""The load generator's ceiling: a raw uvloop protocol that answers every request 202
with fixed bytes (no ASGI, no HTTP library). What the load generator reaches against it
bounds every other figure. Run: ``python -m bench.rawserver --port 8998``.
"""

from __future__ import annotations

import argparse
import asyncio

_BODY = b'{"InferenceId":"00000000-0000-0000-0000-000000000000"}'
_RESPONSE = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class Answer202(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            at = head.find(b"\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r", at + 16)
                length = int(head[at + 16 : stop if stop >= 0 else None])
            if len(buffer) < end + 4 + length:
                return
            del buffer[: end + 4 + length]
            assert self._transport is not None
            self._transport.write(_RESPONSE)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Answer202, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
