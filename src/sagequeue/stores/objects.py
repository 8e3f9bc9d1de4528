"""The object-store backend interface (the full S3 surface the front door serves), the
helpers shared by both adapters, and ``open_object_backend`` which picks one by URL."""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sagequeue.config import ConfigError
from sagequeue.domain.errors import S3Error
from sagequeue.ports import ObjectInfo, ObjectStore

if TYPE_CHECKING:
    from sagequeue.config import Settings

MIB = 1024 * 1024
MAX_SINGLE_PUT = 5 * 1024 * MIB  # S3's limit for one PutObject / UploadPart
MIN_PART_SIZE = 5 * MIB  # every part but the last
MAX_PART_NUMBER = 10_000
MAX_KEY_BYTES = 1024
READ_CHUNK = 256 * 1024
SPOOL_BUFFER = MIB  # bytes gathered from a body before each write to disk

CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")


# ======================================================================================
# Shapes returned by the richer backend interface
# ======================================================================================


@dataclass(slots=True)
class BucketInfo:
    name: str
    created: float  # epoch seconds


@dataclass(slots=True)
class ListPage:
    """One ListObjects page; ``next_token`` is an opaque continuation (the last key or
    common prefix returned) when ``truncated``."""

    objects: list[ObjectInfo] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_token: str | None = None


@dataclass(slots=True)
class PartInfo:
    part_number: int
    size: int
    etag: str  # hex MD5, no quotes
    last_modified: float
    checksum: str | None = None  # base64, of the upload's checksum algorithm


@dataclass(slots=True)
class UploadInfo:
    bucket: str
    key: str
    upload_id: str
    initiated: float
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None


class ObjectBackend(ObjectStore, Protocol):
    """Everything the S3 API needs. Both adapters implement all of it.

    ``put_object`` and ``upload_part`` take ``checksum_algorithm`` (one of
    CHECKSUM_ALGORITHMS): the store computes that checksum over the bytes it writes and
    keeps it. The body iterator may raise (a failed signature or checksum check at the
    end of the stream): then nothing is stored.
    """

    async def close(self) -> None: ...

    async def ensure_bucket(self, name: str) -> None: ...

    async def create_bucket(self, name: str) -> None:
        """Raises BucketAlreadyOwnedByYou when it exists."""

    async def delete_bucket(self, name: str) -> None:
        """Raises NoSuchBucket, BucketNotEmpty."""

    async def head_bucket(self, name: str) -> BucketInfo: ...

    async def list_buckets(self) -> list[BucketInfo]: ...

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: AsyncIterator[bytes],
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        checksum_algorithm: str | None = None,
    ) -> ObjectInfo: ...

    async def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        start_after: str = "",
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage: ...

    async def delete_objects(self, bucket: str, keys: list[str]) -> list[str]:
        """Delete many; returns the keys deleted (absent keys count as deleted)."""

    async def copy_object(
        self,
        source_bucket: str,
        source_key: str,
        bucket: str,
        key: str,
        *,
        replace_metadata: bool = False,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> ObjectInfo: ...

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        checksum_algorithm: str | None = None,
    ) -> UploadInfo: ...

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterator[bytes],
        *,
        checksum_algorithm: str | None = None,
    ) -> PartInfo: ...

    async def complete_multipart_upload(
        self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        """``parts`` are (part number, etag without quotes) in the client's order.
        Raises InvalidPart, InvalidPartOrder, EntityTooSmall, NoSuchUpload."""

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None: ...

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]: ...

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]: ...


# ======================================================================================
# Helpers
# ======================================================================================

_S3_URI = re.compile(r"^s3://([^/]+)/(.+)$", re.DOTALL)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); ValueError when it is not one."""
    match = _S3_URI.match(uri)
    if match is None:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = match.group(1), match.group(2)
    if not valid_bucket_name(bucket):
        raise ValueError(f"invalid bucket name in {uri!r}")
    return bucket, key


_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def valid_bucket_name(name: str) -> bool:
    """S3's general-purpose bucket naming rules."""
    return bool(
        _BUCKET_NAME.match(name)
        and ".." not in name
        and ".-" not in name
        and "-." not in name
        and not _IP_LIKE.match(name)
        and not name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )


def check_bucket_name(name: str) -> None:
    if not valid_bucket_name(name):
        raise S3Error(
            "The specified bucket is not valid.",
            code="InvalidBucketName",
            status=400,
            extra={"BucketName": name},
        )


def check_key(key: str) -> None:
    if not key:
        raise S3Error("A key must be given.", code="InvalidArgument", status=400)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error("Your key is too long", code="KeyTooLongError", status=400)


def no_such_bucket(name: str) -> S3Error:
    return S3Error(
        "The specified bucket does not exist",
        code="NoSuchBucket",
        status=404,
        extra={"BucketName": name},
    )


def no_such_key(key: str) -> S3Error:
    return S3Error(
        "The specified key does not exist.", code="NoSuchKey", status=404, extra={"Key": key}
    )


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error(
        "The specified upload does not exist. The upload ID may be invalid, or the upload "
        "may have been aborted or completed.",
        code="NoSuchUpload",
        status=404,
        extra={"UploadId": upload_id},
    )


def invalid_part(number: int) -> S3Error:
    return S3Error(
        "One or more of the specified parts could not be found.  The part may not have "
        "been uploaded, or the specified entity tag may not match the part's entity tag.",
        code="InvalidPart",
        status=400,
        extra={"PartNumber": str(number)},
    )


def entity_too_large(size: int, limit: int = MAX_SINGLE_PUT) -> S3Error:
    return S3Error(
        "Your proposed upload exceeds the maximum allowed size",
        code="EntityTooLarge",
        status=400,
        extra={"ProposedSize": str(size), "MaxSizeAllowed": str(limit)},
    )


def multipart_etag(part_md5_hex: list[str]) -> str:
    """S3's ETag of a multipart object: MD5 of the concatenated binary part MD5s, -N."""
    digest = hashlib.md5(b"".join(bytes.fromhex(h) for h in part_md5_hex))
    return f"{digest.hexdigest()}-{len(part_md5_hex)}"


def validate_part_list(parts: list[tuple[int, str]]) -> None:
    if not parts:
        raise S3Error(
            "The XML you provided was not well-formed or did not validate against our "
            "published schema",
            code="MalformedXML",
            status=400,
        )
    numbers = [n for n, _ in parts]
    if any(b <= a for a, b in itertools.pairwise(numbers)):
        raise S3Error(
            "The list of parts was not in ascending order. The parts list must be "
            "specified in order by part number.",
            code="InvalidPartOrder",
            status=400,
        )


def entity_too_small(number: int, size: int) -> S3Error:
    return S3Error(
        "Your proposed upload is smaller than the minimum allowed size",
        code="EntityTooSmall",
        status=400,
        extra={
            "ProposedSize": str(size),
            "MinSizeAllowed": str(MIN_PART_SIZE),
            "PartNumber": str(number),
        },
    )


# --------------------------------------------------------------------------------------
# Checksums (awscrt when installed: fast CRC32C / CRC64NVME; zlib / hashlib otherwise)
# --------------------------------------------------------------------------------------


class Checksum(Protocol):
    def update(self, data: bytes) -> None: ...

    def b64(self) -> str: ...


class _HashlibChecksum:
    def __init__(self, name: str) -> None:
        self._hash = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def b64(self) -> str:
        return base64.b64encode(self._hash.digest()).decode()


class _CrcChecksum:
    def __init__(self, function: Callable[[bytes, int], int], width_bytes: int) -> None:
        self._function = function
        self._width = width_bytes
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._function(data, self._value)

    def b64(self) -> str:
        return base64.b64encode(self._value.to_bytes(self._width, "big")).decode()


def _crc_table(poly: int, width: int) -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc & ((1 << width) - 1))
    return table


def _slow_crc(table: list[int], mask: int) -> Callable[[bytes, int], int]:
    # Reflected table CRC; only used without awscrt (slow, but correct).
    def crc(data: bytes, value: int) -> int:
        value ^= mask
        for byte in data:
            value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
        return value ^ mask

    return crc


try:  # pragma: no cover - depends on the environment
    from awscrt import checksums as _crt

    _crc32c = _crt.crc32c
    _crc64nvme = _crt.crc64nvme
except ImportError:  # pragma: no cover
    _crc32c = _slow_crc(_crc_table(0x82F63B78, 32), 0xFFFFFFFF)
    _crc64nvme = _slow_crc(_crc_table(0x9A6C9329AC4BC9B5, 64), 0xFFFFFFFFFFFFFFFF)


def new_checksum(algorithm: str) -> Checksum:
    algorithm = algorithm.upper()
    if algorithm == "CRC32":
        return _CrcChecksum(zlib.crc32, 4)
    if algorithm == "CRC32C":
        return _CrcChecksum(_crc32c, 4)
    if algorithm == "CRC64NVME":
        return _CrcChecksum(_crc64nvme, 8)
    if algorithm in ("SHA1", "SHA256"):
        return _HashlibChecksum(algorithm.lower())
    raise S3Error(
        f"Checksum algorithm {algorithm} is not supported.", code="InvalidRequest", status=400
    )


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(slots=True)
class SpooledBody:
    """What ``spool_body`` saw of the bytes it wrote."""

    size: int
    md5: str  # hex
    checksum: str | None  # base64, when a checksum algorithm was asked for


async def spool_body(
    body: AsyncIterator[bytes],
    write: Callable[[bytes], object],
    *,
    limit: int = MAX_SINGLE_PUT,
    checksum_algorithm: str | None = None,
) -> SpooledBody:
    """Stream a body into ``write`` in SPOOL_BUFFER batches, each written (and added to
    the MD5 and the checksum) in a worker thread. Raises EntityTooLarge once the body
    passes ``limit``; the caller owns what ``write`` writes to and cleans it up on any
    exception."""
    import asyncio

    md5 = hashlib.md5()
    checksum = new_checksum(checksum_algorithm) if checksum_algorithm else None
    size = 0
    buffer = bytearray()

    def flush(data: bytes) -> None:
        write(data)
        md5.update(data)
        if checksum is not None:
            checksum.update(data)

    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise entity_too_large(size, limit)
        buffer += chunk
        if len(buffer) >= SPOOL_BUFFER:
            data, buffer = bytes(buffer), bytearray()
            await asyncio.to_thread(flush, data)
    if buffer:
        await asyncio.to_thread(flush, bytes(buffer))
    return SpooledBody(size, md5.hexdigest(), checksum.b64() if checksum else None)


async def iter_file(path: Path, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
    """Read a file in a worker thread, chunk by chunk."""
    import asyncio

    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_size):
            yield chunk
    finally:
        handle.close()


async def upload_file_if_changed(store: ObjectBackend, bucket: str, key: str, path: Path) -> bool:
    """Upload a local file unless the stored object already has its size and MD5.
    Returns whether it uploaded."""
    import asyncio

    size = path.stat().st_size
    md5 = await asyncio.to_thread(file_md5, path)
    try:
        info = await store.head_object(bucket, key)
        if info.size == size and info.etag.strip('"') == md5:
            return False
    except S3Error as exc:
        if exc.code not in ("NoSuchKey", "NotFound", "404"):
            raise
    await store.put_object(bucket, key, iter_file(path))
    return True


# ======================================================================================
# Opening a backend by URL
# ======================================================================================


async def open_object_backend(url: str, settings: Settings) -> ObjectBackend:
    """``file:///abs/path`` -> LocalObjectStore; ``s3://`` -> S3ObjectStore."""
    if url.startswith("file://"):
        from sagequeue.stores.objects_local import LocalObjectStore

        root = Path(url.removeprefix("file://"))
        if not root.is_absolute():
            root = Path.cwd() / root
        store = LocalObjectStore(root)
        await store.open()
        return store
    if url.startswith("s3://"):
        from sagequeue.stores.objects_s3 import S3ObjectStore

        s3_store = S3ObjectStore(endpoint_url=settings.s3_endpoint_url, region=settings.region)
        await s3_store.open()
        return s3_store
    raise ConfigError(f"object store URL {url!r}: supported forms are file:///path and s3://")
