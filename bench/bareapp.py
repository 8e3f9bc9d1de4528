"""The bare ASGI reference: answers every request 202 with a small JSON body, the least
work an InvokeEndpointAsync front door can do on uvicorn (uvloop + httptools, 1 worker).

Run: ``python -m bench.bareapp --port 8999``.
"""

from __future__ import annotations

import argparse
from typing import Any

_BODY = b'{"InferenceId":"00000000-0000-0000-0000-000000000000"}'
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"x-amzn-sagemaker-outputlocation", b"s3://bench/output/x.out"),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the body like a real front door must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


SERVERS = ("uvicorn", "granian", "hypercorn")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=SERVERS, default="uvicorn")
    args = parser.parse_args()
    if args.server == "granian":
        from granian import Granian

        Granian(
            "bench.bareapp:app",
            address="127.0.0.1",
            port=args.port,
            interface="asgi",
            workers=1,
            loop="uvloop",
            log_enabled=False,
        ).serve()
        return
    if args.server == "hypercorn":
        import asyncio

        import uvloop
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{args.port}"]
        config.accesslog = None
        uvloop.install()
        asyncio.run(serve(app, config))
        return
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
