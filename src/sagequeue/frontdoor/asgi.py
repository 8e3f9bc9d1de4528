"""The front door: a raw ASGI app that authenticates every call with SigV4 and routes
it by the credential scope's service (``sagemaker``, ``s3``, and the other JSON APIs
such as ``logs``)."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sagequeue.domain.errors import (
    AuthFailure,
    ServiceError,
    SignatureError,
    StartupError,
    UnknownOperation,
)
from sagequeue.domain.ids import new_id
from sagequeue.domain.policy import KeyPolicy
from sagequeue.domain.validation import wire_int
from sagequeue.frontdoor.errors import WireProtocol, error_response
from sagequeue.frontdoor.http import (
    Receive,
    Request,
    RequestTooLarge,
    Response,
    Send,
    decode_headers,
)
from sagequeue.frontdoor.sigv4 import UNSIGNED_PAYLOAD, SigV4Verifier, parse_authorization

log = logging.getLogger(__name__)

# The control plane's largest request body by default (its largest inputs, with every
# list and map at its model maximum, stay far below this).
MAX_CONTROL_BODY = 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ApiHandler(Protocol):
    protocol: WireProtocol

    async def handle(self, request: Request) -> Response: ...


class JsonApiHandler(ApiHandler, Protocol):
    # Largest body the API takes: longer ones are refused before they are read.
    max_body: int

    def body_too_large(self) -> ServiceError: ...


class S3Handler(ApiHandler, Protocol):
    async def preflight(self, request: Request) -> Response: ...

    async def browser_post(self, request: Request) -> Response: ...


OpsHandler = Callable[[Request], Awaitable[Response]]
LifespanHook = Callable[[], Awaitable[None]]


class FrontDoor:
    def __init__(
        self,
        verifier: SigV4Verifier,
        *,
        runtime: JsonApiHandler,
        control: JsonApiHandler,
        s3: S3Handler,
        services: dict[str, JsonApiHandler] | None = None,
        policies: dict[str, KeyPolicy] | None = None,
        ops: dict[str, OpsHandler] | None = None,
        metrics: OpsHandler | None = None,
        console: OpsHandler | None = None,
        on_startup: list[LifespanHook] | None = None,
        on_shutdown: list[LifespanHook] | None = None,
    ) -> None:
        self.verifier = verifier
        self.runtime = runtime
        self.control = control
        self.s3 = s3
        # Other services by signing name ("monitoring", "application-autoscaling").
        self.services = services or {}
        # GET /metrics (Prometheus); it authenticates requests itself.
        self.metrics = metrics
        # GET /ui and below: the web console's page and files (unsigned; the page signs
        # its API calls itself).
        self.console = console
        # Access key id -> its policy; keys without one may do everything.
        self.policies = policies or {}
        self.ops = ops or {}
        self.on_startup = on_startup or []
        self.on_shutdown = on_shutdown or []

    def begin_shutdown(self) -> None:
        """The server is stopping: responses that would stream on (event feeds) end now,
        so that none holds the graceful stop up."""
        close_streams = getattr(self.runtime, "close_streams", None)
        if close_streams is not None:
            close_streams()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            raw_path = scope.get("raw_path")
            request = Request(
                method=scope["method"],
                path=scope["path"],
                raw_path=raw_path.decode("latin-1").partition("?")[0]
                if raw_path
                else scope["path"],
                query_string=scope["query_string"].decode("latin-1"),
                headers=decode_headers(scope["headers"]),
                request_id=new_id(),
                receive=receive,
                client_host=(scope.get("client") or (None,))[0],
            )
            response = await self.respond(request)
            await _send(send, response, request.method == "HEAD")
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for hook in self.on_startup:
                        await hook()
                except Exception as exc:
                    if isinstance(exc, ServiceError | StartupError):
                        # A bad declaration or setting: its message says all.
                        log.error("startup failed: %s", exc)
                    else:
                        log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for hook in self.on_shutdown:
                    try:
                        await hook()
                    except Exception:
                        log.exception("shutdown hook failed")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def respond(self, request: Request) -> Response:
        """Authenticate, route and answer one request; every error becomes its wire
        response here. Shared by the ASGI entry and the HTTP server's lane."""
        method = request.method
        headers = request.headers
        # Known once the signature names the service; guessed only for an error before.
        protocol: WireProtocol | None = None
        try:
            if request.path == "/metrics" and self.metrics is not None:
                return await self.metrics(request)
            if self.console is not None and (
                request.path == "/ui" or request.path.startswith("/ui/")
            ):
                # No bucket can be named "ui" (S3 names have 3 characters or more).
                return await self.console(request)
            if method == "OPTIONS" and "authorization" not in headers:
                # A browser's CORS preflight is never signed (its URL may be a presigned
                # one): the S3 API answers it from the bucket's CORS rules.
                return await self.s3.preflight(request)
            if "authorization" not in headers and "X-Amz-" not in request.query_string:
                ops = self.ops.get(request.path)
                if ops is not None:
                    return await ops(request)
                if method == "POST" and headers.get("content-type", "").startswith(
                    "multipart/form-data"
                ):
                    # An HTML form upload (unsigned): refused as not implemented.
                    return await self.s3.browser_post(request)
            if "AWSAccessKeyId=" in request.query_string:
                # S3 presigned URL in the legacy SigV2 form (boto3's default for S3).
                from sagequeue.frontdoor.s3 import is_presigned_v2, verify_presigned_v2

                if is_presigned_v2(request):
                    protocol = WireProtocol.REST_XML
                    request.auth = verify_presigned_v2(
                        self.verifier.secret_key, request, time.time()
                    )
                    return await self._s3(request)
            presign_query = request.query if "X-Amz-" in request.query_string else {}
            parts = parse_authorization(headers, presign_query)
            if parts.service == "s3":
                protocol = WireProtocol.REST_XML
                payload_hash = headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
                request.auth = self.verifier.verify(
                    parts, method, request.raw_path, request.query_string, headers, payload_hash
                )
                return await self._s3(request)
            handler: JsonApiHandler
            if parts.service == "sagemaker":
                handler = self.control if "x-amz-target" in headers else self.runtime
                protocol = handler.protocol
            elif parts.service in self.services:
                handler = self.services[parts.service]
                # An API with several wire protocols (CloudWatch) tells which one a
                # request uses.
                protocol_for = getattr(handler, "protocol_for", None)
                protocol = protocol_for(request) if protocol_for else handler.protocol
            else:
                raise UnknownOperation(
                    f"Service '{parts.service}' is not offered here: this endpoint serves "
                    "'sagemaker' (control plane and runtime), 's3'"
                    + "".join(f", '{name}'" for name in self.services)
                    + "."
                )
            # Everything the headers prove (a known key, a fresh date, this region) is
            # checked before a byte of the body is read, and a body longer than the API
            # takes is refused from its declared length.
            self.verifier.check_scope(parts)
            declared = headers.get("content-length")
            if declared is not None:
                try:
                    too_large = wire_int(declared) > handler.max_body
                except ValueError:
                    too_large = False  # the HTTP parser has refused it already
                if too_large:
                    raise handler.body_too_large()
            signed_hash = headers.get("x-amz-content-sha256")
            if (
                signed_hash is not None
                and "x-amz-content-sha256" in parts.signed_headers
                and _SHA256_HEX.fullmatch(signed_hash)
            ):
                # The client signed the body's hash: the signature is checked first, then
                # the body against the hash.
                request.auth = self.verifier.verify(
                    parts,
                    method,
                    request.raw_path,
                    request.query_string,
                    headers,
                    signed_hash,
                    scope_checked=True,
                )
                body = await self._read_body(request, handler)
                if hashlib.sha256(body).hexdigest() != signed_hash:
                    raise SignatureError(
                        AuthFailure.MISMATCH,
                        "The provided 'x-amz-content-sha256' header does not match what "
                        "was computed.",
                    )
            else:
                body = await self._read_body(request, handler)
                request.auth = self.verifier.verify(
                    parts,
                    method,
                    request.raw_path,
                    request.query_string,
                    headers,
                    hashlib.sha256(body).hexdigest(),
                    scope_checked=True,
                )
            request.access = self.policies.get(parts.access_key)
            return await handler.handle(request)
        except ServiceError as exc:
            response = error_response(
                exc, protocol or _guess_protocol(request), request.request_id, request.path
            )
        except ConnectionError:
            return Response(400)
        except Exception as exc:
            response = error_response(
                exc, protocol or _guess_protocol(request), request.request_id, request.path
            )
        if request.body_unread and not any(name == "connection" for name, _ in response.headers):
            # The unread body must not be parsed as the next request; closing also spares
            # reading it.
            response.headers.append(("connection", "close"))
        return response

    async def _s3(self, request: Request) -> Response:
        assert request.auth is not None
        access = self.policies.get(request.auth.access_key)
        if access is not None:
            from sagequeue.frontdoor.s3_access import s3_permissions

            request.access = access
            for action, resource in s3_permissions(request):
                access.check(action, resource)
        return await self.s3.handle(request)

    @staticmethod
    async def _read_body(request: Request, handler: JsonApiHandler) -> bytes:
        try:
            return await request.read_body(handler.max_body)
        except RequestTooLarge:
            raise handler.body_too_large() from None


def _guess_protocol(request: Request) -> WireProtocol:
    """The protocol to answer in before the signature tells the service."""
    target = request.headers.get("x-amz-target", "")
    if target.startswith("GraniteServiceVersion20100801."):
        return WireProtocol.JSON_1_0
    if request.path.startswith("/service/GraniteServiceVersion20100801/"):
        return WireProtocol.RPC_V2_CBOR
    if target:
        return WireProtocol.JSON
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return WireProtocol.QUERY
    if request.path.startswith("/endpoints/"):
        return WireProtocol.REST_JSON
    return WireProtocol.REST_XML


async def _send(send: Send, response: Response, head_only: bool) -> None:
    # Values go back out as the bytes they came in as (see _respond's decoding).
    headers = [
        (k.encode("latin-1"), v.encode("utf-8", "surrogateescape")) for k, v in response.headers
    ]
    body = response.body
    if isinstance(body, bytes | bytearray | memoryview):
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head_only else bytes(body)})
        return
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if head_only:
        await send({"type": "http.response.body", "body": b""})
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
        return
    try:
        async for chunk in body:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b""})
