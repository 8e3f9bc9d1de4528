"""The object-store backend interface (the full S3 surface the front door serves), the
helpers shared by both adapters, and ``open_object_backend`` which picks one by URL."""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
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
    checksum_algorithm: str | None = None


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
    checksum_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    encryption: str | None = None


@dataclass(slots=True)
class CorsRule:
    """One bucket CORS rule, in the shape of S3's CORSRule."""

    allowed_methods: list[str]
    allowed_origins: list[str]
    allowed_headers: list[str] = field(default_factory=list)
    expose_headers: list[str] = field(default_factory=list)
    max_age_seconds: int | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class WriteCondition:
    """``If-Match`` / ``If-None-Match: *`` on a write or a delete (S3 conditional
    writes). Checked when the request starts (412) and again, atomically, when it
    commits: a failure there means a concurrent write won (409)."""

    if_match: str | None = None
    if_none_match: str | None = None

    def __bool__(self) -> bool:
        return self.if_match is not None or self.if_none_match is not None

    def check(self, key: str, current_etag: str | None, *, racing: bool = False) -> None:
        """Raise unless the condition holds for the current object (None: absent).
        ``If-None-Match`` is ``*`` (any object) or ETags (RFC 7232: not one of those)."""
        if (
            self.if_none_match is not None
            and current_etag is not None
            and etag_matches(self.if_none_match, current_etag)
        ):
            raise conditional_conflict() if racing else precondition_failed("If-None-Match")
        if self.if_match is not None:
            if current_etag is None:
                raise no_such_key(key)
            if not etag_matches(self.if_match, current_etag):
                raise conditional_conflict() if racing else precondition_failed("If-Match")


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match / If-None-Match list names this ETag (or is ``*``)."""
    candidates = [c.strip() for c in header.split(",")]
    return any(c == "*" or c.removeprefix("W/").strip('"') == etag for c in candidates)


def precondition_failed(condition: str) -> S3Error:
    return S3Error(
        "At least one of the pre-conditions you specified did not hold",
        code="PreconditionFailed",
        status=412,
        extra={"Condition": condition},
    )


def conditional_conflict() -> S3Error:
    return S3Error(
        "The conditional request cannot succeed due to a conflicting operation against "
        "this resource.",
        code="ConditionalRequestConflict",
        status=409,
    )


class ObjectBackend(ObjectStore, Protocol):
    """Everything the S3 API needs. Both adapters implement all of it.

    ``put_object`` and ``upload_part`` take ``checksum_algorithm`` (one of
    CHECKSUM_ALGORITHMS): the store computes that checksum over the bytes it writes and
    keeps it. The body iterator may raise (a failed signature or checksum check at the
    end of the stream): then nothing is stored. ``tags`` are a validated tag set,
    ``encryption`` is None or "AES256" (SSE-S3), ``condition`` an S3 conditional write.
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
        tags: dict[str, str] | None = None,
        encryption: str | None = None,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo: ...

    async def delete_object(
        self, bucket: str, key: str, condition: WriteCondition | None = None
    ) -> None:
        """Absent keys are deleted already; with ``condition`` (If-Match) they are
        NoSuchKey, and a different ETag is PreconditionFailed."""

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
        tags: dict[str, str] | None = None,
        encryption: str | None = None,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        """``tags`` None keeps the source's tags; the copy is encrypted per
        ``encryption`` whatever the source was."""

    async def object_parts(self, bucket: str, key: str) -> list[PartInfo] | None:
        """The parts of an object made by a multipart upload (number, size, checksum),
        None for an object written whole."""

    async def get_object_tagging(self, bucket: str, key: str) -> dict[str, str]: ...

    async def put_object_tagging(self, bucket: str, key: str, tags: dict[str, str]) -> None: ...

    async def delete_object_tagging(self, bucket: str, key: str) -> None: ...

    async def get_bucket_cors(self, bucket: str) -> list[CorsRule]:
        """Raises NoSuchCORSConfiguration when the bucket has none."""

    async def put_bucket_cors(self, bucket: str, rules: list[CorsRule]) -> None: ...

    async def delete_bucket_cors(self, bucket: str) -> None: ...

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        checksum_algorithm: str | None = None,
        checksum_type: str | None = None,
        tags: dict[str, str] | None = None,
        encryption: str | None = None,
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
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart | tuple[int, str]],
        *,
        checksum: tuple[str, str] | None = None,
        checksum_type: str | None = None,
        object_size: int | None = None,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        """``parts`` in the client's order. ``checksum`` is the (algorithm, value) the
        client sent for the whole object, ``checksum_type`` the type it named. Raises
        InvalidPart, InvalidPartOrder, EntityTooSmall, NoSuchUpload, BadDigest. A repeat
        of a completion that succeeded answers the same object."""

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


class StorageFull(S3Error):
    """The store's disk is full: writes fail until space is freed (deletes still work)."""


def storage_full() -> StorageFull:
    return StorageFull(
        "The object store has no space left; delete objects to free space.",
        code="InsufficientStorage",
        status=507,
    )


def no_such_cors(bucket: str) -> S3Error:
    return S3Error(
        "The CORS configuration does not exist",
        code="NoSuchCORSConfiguration",
        status=404,
        extra={"BucketName": bucket},
    )


def object_size_mismatch(declared: int, actual: int) -> S3Error:
    return S3Error(
        f"The provided x-amz-mp-object-size header value {declared} does not match the "
        f"size of the object, {actual}.",
        code="InvalidRequest",
        status=400,
    )


def multipart_etag(part_md5_hex: list[str]) -> str:
    """S3's ETag of a multipart object: MD5 of the concatenated binary part MD5s, -N."""
    digest = hashlib.md5(b"".join(bytes.fromhex(h) for h in part_md5_hex))
    return f"{digest.hexdigest()}-{len(part_md5_hex)}"


@dataclass(slots=True)
class CompletedPart:
    """One <Part> of a CompleteMultipartUpload request: its number, the ETag the client
    holds (no quotes) and the part checksums it lists (algorithm -> base64)."""

    part_number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)


def validate_part_list(parts: Sequence[CompletedPart | tuple[int, str]]) -> list[CompletedPart]:
    """The part list to assemble: numbers ascending; a number listed more than once
    counts once (S3 takes the part as last uploaded)."""
    if not parts:
        raise S3Error(
            "The XML you provided was not well-formed or did not validate against our "
            "published schema",
            code="MalformedXML",
            status=400,
        )
    normal = [p if isinstance(p, CompletedPart) else CompletedPart(p[0], p[1]) for p in parts]
    if any(b.part_number < a.part_number for a, b in itertools.pairwise(normal)):
        raise S3Error(
            "The list of parts was not in ascending order. The parts list must be "
            "specified in order by part number.",
            code="InvalidPartOrder",
            status=400,
        )
    unique: dict[int, CompletedPart] = {}
    for part in normal:
        unique[part.part_number] = part
    return list(unique.values())


def check_listed_part_checksum(
    part: CompletedPart, stored_algorithm: str | None, stored_value: str | None
) -> None:
    """A part checksum listed in CompleteMultipartUpload must be the one computed when
    that part was uploaded."""
    for algorithm, value in part.checksums.items():
        if algorithm != stored_algorithm or value != stored_value:
            raise invalid_part(part.part_number)


async def completed_before(
    store: ObjectBackend, bucket: str, key: str, upload_id: str, parts: list[CompletedPart]
) -> ObjectInfo:
    """CompleteMultipartUpload of an upload that is gone: S3 answers a repeat of a
    completion that succeeded (a client retrying after a timeout) with the same result.
    The object at the key is that result when its ETag is the one these parts give."""
    try:
        info = await store.head_object(bucket, key)
    except S3Error as exc:
        if exc.code == "NoSuchBucket":
            raise
        raise no_such_upload(upload_id) from None
    if info.etag == multipart_etag([p.etag for p in parts]):
        return info
    raise no_such_upload(upload_id)


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
# Object tags
# --------------------------------------------------------------------------------------

MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
_TAG_TEXT = re.compile(r"^[\w +\-=._:/@]*$")


def _invalid_tag(message: str) -> S3Error:
    return S3Error(message, code="InvalidTag", status=400)


def validate_tags(tags: Sequence[tuple[str, str]]) -> dict[str, str]:
    """S3's rules for an object's tag set: at most 10, keys 1-128 and values 0-256
    characters of letters, digits, spaces and ``+ - = . _ : / @``, no key twice, no
    ``aws:`` prefix."""
    if len(tags) > MAX_TAGS:
        raise _invalid_tag(f"Object tags cannot be greater than {MAX_TAGS}")
    result: dict[str, str] = {}
    for key, value in tags:
        if not key or len(key) > MAX_TAG_KEY:
            raise _invalid_tag(
                f"The TagKey you have provided is too long, max {MAX_TAG_KEY}"
                if key
                else "The TagKey you have provided is invalid"
            )
        if len(value) > MAX_TAG_VALUE:
            raise _invalid_tag(f"The TagValue you have provided is too long, max {MAX_TAG_VALUE}")
        if not _TAG_TEXT.match(key) or key.lower().startswith("aws:"):
            raise _invalid_tag("The TagKey you have provided is invalid")
        if not _TAG_TEXT.match(value):
            raise _invalid_tag("The TagValue you have provided is invalid")
        if key in result:
            raise _invalid_tag("Cannot provide multiple Tags with the same key")
        result[key] = value
    return result


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


_crc32c: Callable[[bytes, int], int]
_crc64nvme: Callable[[bytes, int], int]
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


CHECKSUM_TYPES = ("COMPOSITE", "FULL_OBJECT")
_CRC_PARAMETERS = {  # reflected polynomial, width in bits
    "CRC32": (0xEDB88320, 32),
    "CRC32C": (0x82F63B78, 32),
    "CRC64NVME": (0x9A6C9329AC4BC9B5, 64),
}


def checksum_type_for(algorithm: str | None, requested: str | None) -> str | None:
    """The checksum type of a multipart upload: as requested, else S3's default for the
    algorithm (FULL_OBJECT for CRC64NVME, COMPOSITE otherwise). FULL_OBJECT needs a CRC,
    and CRC64NVME cannot be COMPOSITE."""
    if requested is not None:
        requested = requested.strip().upper()
        if requested not in CHECKSUM_TYPES:
            raise S3Error(
                f"Value for x-amz-checksum-type header is invalid: {requested}",
                code="InvalidRequest",
                status=400,
            )
        if algorithm is None:
            raise S3Error(
                "The x-amz-checksum-type header can only be used with the "
                "x-amz-checksum-algorithm header.",
                code="InvalidRequest",
                status=400,
            )
    if algorithm is None:
        return None
    kind = requested or ("FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")
    if kind == "FULL_OBJECT" and algorithm not in _CRC_PARAMETERS:
        raise S3Error(
            f"The FULL_OBJECT checksum type cannot be used with the {algorithm.lower()} "
            "checksum algorithm.",
            code="InvalidRequest",
            status=400,
        )
    if kind == "COMPOSITE" and algorithm == "CRC64NVME":
        raise S3Error(
            "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm.",
            code="InvalidRequest",
            status=400,
        )
    return kind


def _gf2_multiply(a: int, b: int, poly: int, width: int) -> int:
    """a * b modulo the CRC polynomial, both in reflected bit order (zlib's multmodp)."""
    m = 1 << (width - 1)
    product = 0
    while True:
        if a & m:
            product ^= b
            if a & (m - 1) == 0:
                return product
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1


def crc_combine(algorithm: str, first: int, second: int, second_length: int) -> int:
    """The CRC of A+B from crc(A), crc(B) and len(B) (zlib's crc32_combine, for any
    reflected CRC whose initial value equals its final XOR, as S3's three CRCs do)."""
    poly, width = _CRC_PARAMETERS[algorithm]
    power = 1 << (width - 2)  # x^1
    x_to_the_n = 1 << (width - 1)  # x^0
    n = second_length * 8
    while n:
        if n & 1:
            x_to_the_n = _gf2_multiply(power, x_to_the_n, poly, width)
        n >>= 1
        power = _gf2_multiply(power, power, poly, width)
    return _gf2_multiply(x_to_the_n, first, poly, width) ^ second


def combined_checksum(algorithm: str, checksum_type: str, parts: Sequence[tuple[int, str]]) -> str:
    """A multipart object's checksum from its parts' (size, base64 checksum): COMPOSITE is
    the checksum of the concatenated binary part checksums, "-N"; FULL_OBJECT is the CRC
    of the whole object, combined from the parts' CRCs."""
    if checksum_type == "FULL_OBJECT":
        width = _CRC_PARAMETERS[algorithm][1]
        value = 0
        for size, part_checksum in parts:
            part_value = int.from_bytes(base64.b64decode(part_checksum), "big")
            value = crc_combine(algorithm, value, part_value, size)
        return base64.b64encode(value.to_bytes(width // 8, "big")).decode()
    combined = new_checksum(algorithm)
    for _, part_checksum in parts:
        combined.update(base64.b64decode(part_checksum))
    return f"{combined.b64()}-{len(parts)}"


def check_expected_checksum(algorithm: str, computed: str, expected: str | None) -> None:
    """The checksum a client sent with CompleteMultipartUpload (of the whole object,
    ``<base64>-<N>`` for a composite one) must be the one the parts give."""
    if expected is None:
        return
    value, _, count = computed.partition("-")
    sent_value, _, sent_count = expected.strip().partition("-")
    if sent_value != value or (sent_count and sent_count != count):
        raise S3Error(
            f"The {algorithm.lower()} you specified did not match the calculated checksum.",
            code="BadDigest",
            status=400,
        )


def check_completion_checksum_type(upload: UploadInfo, requested: str | None) -> None:
    """x-amz-checksum-type on CompleteMultipartUpload must be the upload's."""
    if requested is None:
        return
    if upload.checksum_type is None or requested.strip().upper() != upload.checksum_type:
        raise S3Error(
            f"The upload was created using the {upload.checksum_type or 'no'} checksum mode. "
            "The complete request must use the same checksum mode.",
            code="InvalidRequest",
            status=400,
        )


def check_completion_checksum(
    algorithm: str | None, checksums: dict[str, str], sent: tuple[str, str] | None
) -> None:
    """The whole-object checksum sent with CompleteMultipartUpload: of the upload's
    algorithm, and equal to what the parts give."""
    if sent is None:
        return
    sent_algorithm, value = sent
    if algorithm is None or sent_algorithm != algorithm:
        named = f"the {algorithm.lower()}" if algorithm else "no"
        raise S3Error(
            f"The upload was created using {named} checksum algorithm. The complete request "
            "must use the same checksum algorithm.",
            code="InvalidRequest",
            status=400,
        )
    if algorithm in checksums:
        check_expected_checksum(algorithm, checksums[algorithm], value)


def check_encryption(encryption: str | None) -> None:
    """Server-side encryption a store can do: none, or SSE-S3 (AES256)."""
    if encryption not in (None, "AES256"):
        raise S3Error(
            "The encryption method specified is not supported",
            code="InvalidArgument",
            status=400,
            extra={"ArgumentName": "x-amz-server-side-encryption", "ArgumentValue": encryption},
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
