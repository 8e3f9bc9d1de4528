"""S3 upload bodies as SDKs send them: ``aws-chunked`` decoding (signed chunks,
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``, and unsigned chunks with trailing
checksums, ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``), and verification of the payload
against ``x-amz-content-sha256``, ``Content-MD5`` and ``x-amz-checksum-*`` while it
streams. Every check fails by raising from the body iterator at the point the data is
known bad, so a store consuming it never commits a bad object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sagequeue.domain.errors import AuthFailure, S3Error, SignatureError
from sagequeue.domain.validation import wire_hex, wire_int
from sagequeue.frontdoor.sigv4 import EMPTY_SHA256, AuthContext
from sagequeue.stores.objects import CHECKSUM_ALGORITHMS, new_checksum

STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_MAX_LINE = 8192
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)


def _incomplete_body() -> S3Error:
    return S3Error(
        "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        code="IncompleteBody",
        status=400,
    )


def _malformed_chunk(detail: str) -> S3Error:
    return S3Error(f"Malformed aws-chunked body: {detail}", code="InvalidRequest", status=400)


class _Buffered:
    """Line / exact-length reads over an async byte stream, with a small buffer."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = await anext(self._stream)
        except StopAsyncIteration:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def read_line(self) -> bytes | None:
        """Bytes up to CRLF (excluded); None at a clean end of stream."""
        while True:
            index = self._buffer.find(b"\r\n")
            if index >= 0:
                line = bytes(self._buffer[:index])
                del self._buffer[: index + 2]
                return line
            if len(self._buffer) > _MAX_LINE:
                raise _malformed_chunk("line too long")
            if not await self._fill():
                if self._buffer:
                    raise _incomplete_body()
                return None

    async def read_exact(self, size: int) -> AsyncIterator[bytes]:
        """Yield exactly ``size`` bytes in pieces as they arrive."""
        remaining = size
        while remaining > 0:
            if not self._buffer and not await self._fill():
                raise _incomplete_body()
            piece = bytes(self._buffer[:remaining])
            del self._buffer[: len(piece)]
            remaining -= len(piece)
            yield piece

    async def at_end(self) -> bool:
        while not self._buffer:
            if not await self._fill():
                return True
        return False


@dataclass(slots=True)
class ChunkedBody:
    """Decoded chunks, and the trailing headers once the stream is exhausted."""

    trailers: dict[str, str] = field(default_factory=dict)
    decoded_length: int = 0


def _chunk_string_to_sign(auth: AuthContext, previous: str, data_hash: str) -> str:
    return (
        f"AWS4-HMAC-SHA256-PAYLOAD\n{auth.amz_date}\n{auth.scope}\n{previous}\n"
        f"{EMPTY_SHA256}\n{data_hash}"
    )


def _sign(auth: AuthContext, string_to_sign: str) -> str:
    return hmac.new(auth.signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()


async def decode_aws_chunked(
    stream: AsyncIterator[bytes],
    state: ChunkedBody,
    *,
    auth: AuthContext | None,
    signed: bool,
) -> AsyncIterator[bytes]:
    """Decode an aws-chunked body, verifying chunk (and trailer) signatures when
    ``signed``. Trailing headers land in ``state.trailers``."""
    reader = _Buffered(stream)
    previous = auth.signature if auth is not None else ""
    while True:
        line = await reader.read_line()
        if line is None:
            raise _incomplete_body()
        size_text, _, extension = line.decode("latin-1").partition(";")
        try:
            size = wire_hex(size_text.strip())
        except ValueError:
            raise _malformed_chunk(f"bad chunk size {size_text!r}") from None
        claimed = ""
        if signed:
            name, _, claimed = extension.partition("=")
            if name.strip() != "chunk-signature" or auth is None:
                raise SignatureError(AuthFailure.MISMATCH, _SIGNATURE_MISMATCH)
        digest = hashlib.sha256() if signed else None
        async for piece in reader.read_exact(size):
            if digest is not None:
                digest.update(piece)
            state.decoded_length += len(piece)
            # Passed on before the chunk signature is checked: a mismatch raises before
            # the stream ends, so the store never commits the data.
            yield piece
        if signed and auth is not None and digest is not None:
            expected = _sign(auth, _chunk_string_to_sign(auth, previous, digest.hexdigest()))
            if not hmac.compare_digest(expected, claimed.strip()):
                raise SignatureError(AuthFailure.MISMATCH, _SIGNATURE_MISMATCH)
            previous = expected
        if size == 0:
            break
        if await reader.read_line() != b"":
            raise _malformed_chunk("chunk data not followed by CRLF")
    # Trailing headers (possibly none), then an empty line or the end of the stream.
    trailer_lines: list[str] = []
    trailer_signature: str | None = None
    while True:
        line = await reader.read_line()
        if not line:
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _malformed_chunk(f"bad trailer {line[:100]!r}")
        name, value = name.strip().lower(), value.strip()
        if name == "x-amz-trailer-signature":
            trailer_signature = value
            continue
        state.trailers[name] = value
        trailer_lines.append(f"{name}:{value}\n")
    if signed and trailer_lines:
        assert auth is not None
        string_to_sign = (
            f"AWS4-HMAC-SHA256-TRAILER\n{auth.amz_date}\n{auth.scope}\n{previous}\n"
            + hashlib.sha256("".join(trailer_lines).encode()).hexdigest()
        )
        if trailer_signature is None or not hmac.compare_digest(
            _sign(auth, string_to_sign), trailer_signature
        ):
            raise SignatureError(AuthFailure.MISMATCH, _SIGNATURE_MISMATCH)


# ======================================================================================
# Payload verification
# ======================================================================================


@dataclass(slots=True)
class UploadBody:
    """A request body ready for a store: decoded, and verified as it is consumed."""

    stream: AsyncIterator[bytes]
    checksum_algorithm: str | None  # the algorithm the client asked for (or sent)
    declared_length: int | None  # decoded length, when the client said it


def checksum_algorithm_of(headers: dict[str, str]) -> tuple[str | None, str | None, bool]:
    """(algorithm, value in a header, value comes in a trailer) from the request."""
    for algorithm in CHECKSUM_ALGORITHMS:
        value = headers.get(f"x-amz-checksum-{algorithm.lower()}")
        if value is not None:
            return algorithm, value, False
    trailer = headers.get("x-amz-trailer", "").strip().lower()
    if trailer.startswith("x-amz-checksum-"):
        algorithm = trailer.removeprefix("x-amz-checksum-").upper()
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise S3Error(f"Unsupported trailer {trailer}", code="InvalidRequest", status=400)
        return algorithm, None, True
    requested = headers.get("x-amz-sdk-checksum-algorithm") or headers.get(
        "x-amz-checksum-algorithm"
    )
    if requested:
        algorithm = requested.strip().upper()
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise S3Error(
                f"Checksum algorithm {requested} is not supported.",
                code="InvalidRequest",
                status=400,
            )
        return algorithm, None, False
    return None, None, False


def upload_body(
    headers: dict[str, str],
    stream: AsyncIterator[bytes],
    auth: AuthContext | None,
    *,
    max_length: int,
) -> UploadBody:
    """Wrap a request body for storing: decode aws-chunked, then verify while streaming."""
    from sagequeue.stores.objects import entity_too_large

    content_sha256 = headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    encoding = [e.strip() for e in headers.get("content-encoding", "").split(",") if e.strip()]
    # A body is aws-chunked when the payload hash says so, or when Content-Encoding
    # says so together with the decoded length aws-chunked requires; "aws-chunked" in
    # Content-Encoding alone (a client's stored header) does not make a plain body
    # chunked.
    chunked = content_sha256.startswith("STREAMING-") or (
        "aws-chunked" in encoding and "x-amz-decoded-content-length" in headers
    )
    declared: int | None = None
    length_header = (
        headers.get("x-amz-decoded-content-length") if chunked else headers.get("content-length")
    )
    if length_header is not None:
        try:
            declared = wire_int(length_header)
        except ValueError:
            raise S3Error("Invalid content length", code="InvalidArgument", status=400) from None
        if declared > max_length:
            raise entity_too_large(declared, max_length)
    algorithm, header_value, in_trailer = checksum_algorithm_of(headers)
    state = ChunkedBody()
    raw_sha256 = content_sha256.lower() if _HEX_SHA256.match(content_sha256.lower()) else None
    body = stream
    if raw_sha256 is not None:
        body = _verify_sha256(body, raw_sha256)
    if chunked:
        if content_sha256 in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
            if auth is None or auth.presigned:
                raise SignatureError(AuthFailure.MISMATCH, _SIGNATURE_MISMATCH)
            body = decode_aws_chunked(body, state, auth=auth, signed=True)
        elif content_sha256 in (STREAMING_UNSIGNED_TRAILER, "UNSIGNED-PAYLOAD") or raw_sha256:
            body = decode_aws_chunked(body, state, auth=auth, signed=False)
        else:
            raise S3Error(
                f"x-amz-content-sha256 {content_sha256} is not supported.",
                code="InvalidArgument",
                status=400,
            )
    content_md5 = headers.get("content-md5")
    body = _verify_decoded(
        body,
        state,
        declared=declared,
        content_md5=content_md5,
        algorithm=algorithm,
        header_value=header_value,
        in_trailer=in_trailer,
    )
    return UploadBody(body, algorithm, declared)


async def _verify_sha256(stream: AsyncIterator[bytes], expected: str) -> AsyncIterator[bytes]:
    digest = hashlib.sha256()
    async for chunk in stream:
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != expected:
        raise S3Error(
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            code="XAmzContentSHA256Mismatch",
            status=400,
            extra={
                "ClientComputedContentSHA256": expected,
                "S3ComputedContentSHA256": digest.hexdigest(),
            },
        )


async def _verify_decoded(
    stream: AsyncIterator[bytes],
    state: ChunkedBody,
    *,
    declared: int | None,
    content_md5: str | None,
    algorithm: str | None,
    header_value: str | None,
    in_trailer: bool,
) -> AsyncIterator[bytes]:
    md5_expected: bytes | None = None
    if content_md5 is not None:
        try:
            md5_expected = base64.b64decode(content_md5, validate=True)
        except binascii.Error:
            md5_expected = b""
        if len(md5_expected) != 16:
            raise S3Error(
                "The Content-MD5 you specified was invalid.", code="InvalidDigest", status=400
            )
    md5 = hashlib.md5() if md5_expected is not None else None
    checksum = new_checksum(algorithm) if algorithm and (header_value or in_trailer) else None
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if declared is not None and size > declared:
            raise _incomplete_body()
        if md5 is not None:
            md5.update(chunk)
        if checksum is not None:
            checksum.update(chunk)
        yield chunk
    if declared is not None and size != declared:
        raise _incomplete_body()
    if md5 is not None and md5.digest() != md5_expected:
        raise S3Error(
            "The Content-MD5 you specified did not match what we received.",
            code="BadDigest",
            status=400,
        )
    if checksum is not None and algorithm is not None:
        expected = header_value
        if in_trailer:
            expected = state.trailers.get(f"x-amz-checksum-{algorithm.lower()}")
            if expected is None:
                raise S3Error(
                    f"The x-amz-checksum-{algorithm.lower()} trailer was not received.",
                    code="InvalidRequest",
                    status=400,
                )
        if checksum.b64() != expected:
            raise S3Error(
                f"The {algorithm} you specified did not match the calculated checksum.",
                code="BadDigest",
                status=400,
            )
