"""aws-chunked decoding and payload verification (frontdoor/s3_chunked.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import zlib
from collections.abc import AsyncIterator

import pytest

from sagequeue.domain.errors import S3Error, SignatureError
from sagequeue.frontdoor.s3_chunked import upload_body
from sagequeue.frontdoor.sigv4 import EMPTY_SHA256, AuthContext, signing_key

AUTH = AuthContext(
    access_key="AK",
    date="20261125",
    region="us-east-1",
    service="s3",
    amz_date="20261125T120000Z",
    signature="a" * 64,  # the seed signature of the request
    signing_key=signing_key("secret", "20261125", "us-east-1", "s3"),
    payload_hash="",
    presigned=False,
)


def sign(string_to_sign: str) -> str:
    return hmac.new(AUTH.signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def signed_chunks(chunks: list[bytes], trailer: dict[str, str] | None = None) -> bytes:
    """Encode as STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER], as SDKs do."""
    previous = AUTH.signature
    out = bytearray()
    for chunk in [*chunks, b""]:
        signature = sign(
            f"AWS4-HMAC-SHA256-PAYLOAD\n{AUTH.amz_date}\n{AUTH.scope}\n{previous}\n"
            f"{EMPTY_SHA256}\n{hashlib.sha256(chunk).hexdigest()}"
        )
        out += f"{len(chunk):x};chunk-signature={signature}\r\n".encode() + chunk
        if chunk or not trailer:
            out += b"\r\n"
        previous = signature
    if trailer:
        lines = "".join(f"{k}:{v}\n" for k, v in trailer.items())
        trailer_signature = sign(
            f"AWS4-HMAC-SHA256-TRAILER\n{AUTH.amz_date}\n{AUTH.scope}\n{previous}\n"
            + hashlib.sha256(lines.encode()).hexdigest()
        )
        out += lines.replace("\n", "\r\n").encode()
        out += f"x-amz-trailer-signature:{trailer_signature}\r\n\r\n".encode()
    return bytes(out)


def unsigned_chunks(chunks: list[bytes], trailer: dict[str, str]) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    out += b"0\r\n"
    out += "".join(f"{k}:{v}\r\n" for k, v in trailer.items()).encode() + b"\r\n"
    return bytes(out)


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def pieces(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    # Small, odd-sized pieces: chunk boundaries never line up with network reads.
    for start in range(0, len(data), size):
        yield data[start : start + size]


def decode(headers: dict[str, str], raw: bytes, auth: AuthContext | None = AUTH) -> bytes:
    async def run() -> bytes:
        body = upload_body(headers, pieces(raw), auth, max_length=1 << 30)
        return b"".join([chunk async for chunk in body.stream])

    return asyncio.run(run())


SIGNED = {
    "content-encoding": "aws-chunked",
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
}


def test_signed_chunks_decode_to_the_payload() -> None:
    raw = signed_chunks([b"hello ", b"streaming ", b"world"])
    headers = {**SIGNED, "x-amz-decoded-content-length": "21"}
    assert decode(headers, raw) == b"hello streaming world"


def test_tampered_signed_chunk_is_signature_mismatch() -> None:
    raw = signed_chunks([b"hello", b"world"]).replace(b"world", b"WORLD")
    with pytest.raises(SignatureError):
        decode(SIGNED, raw)


def test_signed_chunks_with_another_seed_are_signature_mismatch() -> None:
    raw = signed_chunks([b"data"])
    other = AuthContext(**{**{f: getattr(AUTH, f) for f in AUTH.__slots__}, "signature": "b" * 64})
    with pytest.raises(SignatureError):
        decode(SIGNED, raw, auth=other)


def test_signed_trailer_checksum_is_verified() -> None:
    data = b"payload"
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    raw = signed_chunks([data], {"x-amz-checksum-crc32": crc32_b64(data)})
    assert decode(headers, raw) == data
    tampered = raw.replace(crc32_b64(data).encode(), crc32_b64(b"other").encode())
    with pytest.raises(SignatureError):
        decode(headers, tampered)


UNSIGNED_TRAILER = {
    "content-encoding": "aws-chunked",
    "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    "x-amz-trailer": "x-amz-checksum-crc32",
}


def test_unsigned_chunks_with_matching_trailer_decode() -> None:
    data = b"x" * 100 + b"y" * 50
    raw = unsigned_chunks([data[:100], data[100:]], {"x-amz-checksum-crc32": crc32_b64(data)})
    assert decode({**UNSIGNED_TRAILER, "x-amz-decoded-content-length": "150"}, raw) == data


def test_unsigned_chunks_with_wrong_trailer_are_bad_digest() -> None:
    raw = unsigned_chunks([b"abc"], {"x-amz-checksum-crc32": crc32_b64(b"abd")})
    with pytest.raises(S3Error) as caught:
        decode(UNSIGNED_TRAILER, raw)
    assert caught.value.code == "BadDigest"


def test_missing_announced_trailer_is_refused() -> None:
    raw = b"3\r\nabc\r\n0\r\n\r\n"
    with pytest.raises(S3Error) as caught:
        decode(UNSIGNED_TRAILER, raw)
    assert caught.value.code == "InvalidRequest"


def test_truncated_chunked_body_is_incomplete_body() -> None:
    raw = unsigned_chunks([b"abcdef"], {"x-amz-checksum-crc32": crc32_b64(b"abcdef")})
    with pytest.raises(S3Error) as caught:
        decode(UNSIGNED_TRAILER, raw[:8])
    assert caught.value.code == "IncompleteBody"


def test_decoded_length_mismatch_is_incomplete_body() -> None:
    raw = unsigned_chunks([b"abc"], {"x-amz-checksum-crc32": crc32_b64(b"abc")})
    with pytest.raises(S3Error) as caught:
        decode({**UNSIGNED_TRAILER, "x-amz-decoded-content-length": "4"}, raw)
    assert caught.value.code == "IncompleteBody"


def test_payload_not_matching_x_amz_content_sha256_is_rejected() -> None:
    headers = {"x-amz-content-sha256": hashlib.sha256(b"claimed").hexdigest()}
    with pytest.raises(S3Error) as caught:
        decode(headers, b"actual")
    assert caught.value.code == "XAmzContentSHA256Mismatch"


def test_content_md5_mismatch_is_bad_digest_and_malformed_is_invalid_digest() -> None:
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(S3Error) as caught:
        decode({"content-md5": wrong}, b"data")
    assert caught.value.code == "BadDigest"
    with pytest.raises(S3Error) as caught:
        decode({"content-md5": "not-base64!"}, b"data")
    assert caught.value.code == "InvalidDigest"


@pytest.mark.parametrize(
    ("algorithm", "value"),
    [
        ("crc32", crc32_b64(b"data")),
        ("sha256", base64.b64encode(hashlib.sha256(b"data").digest()).decode()),
        ("sha1", base64.b64encode(hashlib.sha1(b"data").digest()).decode()),
        ("crc32c", "rth90Q=="),  # as botocore / awscrt compute it for b"data"
        ("crc64nvme", "7a5hQ478J4A="),
    ],
)
def test_checksum_headers_are_verified(algorithm: str, value: str) -> None:
    assert decode({f"x-amz-checksum-{algorithm}": value}, b"data") == b"data"
    with pytest.raises(S3Error) as caught:
        decode({f"x-amz-checksum-{algorithm}": value}, b"datA")
    assert caught.value.code == "BadDigest"


def test_declared_length_over_the_limit_is_entity_too_large() -> None:
    with pytest.raises(S3Error) as caught:
        upload_body({"content-length": str(6 << 30)}, pieces(b""), AUTH, max_length=5 << 30)
    assert caught.value.code == "EntityTooLarge"
