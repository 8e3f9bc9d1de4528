"""Object store on any S3 service (AWS S3, MinIO, Ceph RGW, R2, moto...) through boto3.

boto3 is blocking: every call runs in this store's thread pool, never on the event loop.
Bodies of unknown length are spooled to a temporary file on disk (S3 needs the length
up front), so memory stays bounded whatever the object size.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar
from urllib.parse import urlencode

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sagequeue.domain.errors import S3Error
from sagequeue.ports import ObjectInfo
from sagequeue.stores.objects import (
    CHECKSUM_ALGORITHMS,
    MAX_SINGLE_PUT,
    READ_CHUNK,
    BucketInfo,
    CompletedPart,
    CorsRule,
    ListPage,
    PartInfo,
    UploadInfo,
    WriteCondition,
    check_bucket_name,
    check_completion_checksum,
    check_encryption,
    check_key,
    checksum_type_for,
    combined_checksum,
    completed_before,
    new_checksum,
    no_such_bucket,
    no_such_cors,
    no_such_key,
    object_size_mismatch,
    spool_body,
    validate_part_list,
    validate_tags,
)

T = TypeVar("T")

# Stored headers (lower-case HTTP names) <-> boto3 parameter names.
_HEADER_PARAMS = {
    "content-encoding": "ContentEncoding",
    "content-disposition": "ContentDisposition",
    "cache-control": "CacheControl",
    "content-language": "ContentLanguage",
}


class S3ObjectStore:
    def __init__(
        self, *, endpoint_url: str | None = None, region: str = "us-east-1", max_workers: int = 16
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="objects-s3")
        self._client: Any = None

    async def open(self) -> None:
        def make() -> Any:
            # Credentials come from the standard AWS chain (env, profile, instance role).
            return boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=Config(
                    max_pool_connections=32,
                    retries={"max_attempts": 5, "mode": "standard"},
                    s3={"addressing_style": "path"},
                ),
            )

        self._client = await self._run(make)

    async def close(self) -> None:
        self._pool.shutdown(wait=False)

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: function(*args, **kwargs))

    async def _call(self, operation: str, **params: Any) -> Any:
        try:
            return await self._run(getattr(self._client, operation), **params)
        except ClientError as exc:
            raise _translate(exc, params) from None
        except BotoCoreError as exc:
            # The backend cannot be reached (connection refused, timeouts): transient.
            raise S3Error(
                f"The S3 backend is unavailable: {exc}", code="ServiceUnavailable", status=503
            ) from None

    # ---------------------------------------------------------------- buckets
    async def ensure_bucket(self, name: str) -> None:
        try:
            await self.create_bucket(name)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    async def create_bucket(self, name: str) -> None:
        check_bucket_name(name)
        # us-east-1 answers 200 to creating a bucket one already owns: make the contract
        # (BucketAlreadyOwnedByYou) the same on every backend.
        try:
            await self.head_bucket(name)
        except S3Error as exc:
            if exc.code != "NoSuchBucket":
                raise
        else:
            raise S3Error(
                "Your previous request to create the named bucket succeeded and you already "
                "own it.",
                code="BucketAlreadyOwnedByYou",
                status=409,
                extra={"BucketName": name},
            )
        params: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        await self._call("create_bucket", **params)

    async def delete_bucket(self, name: str) -> None:
        await self._call("delete_bucket", Bucket=name)

    async def head_bucket(self, name: str) -> BucketInfo:
        await self._call("head_bucket", Bucket=name)
        return BucketInfo(name, 0.0)

    async def list_buckets(self) -> list[BucketInfo]:
        response = await self._call("list_buckets")
        return [BucketInfo(b["Name"], b["CreationDate"].timestamp()) for b in response["Buckets"]]

    # ---------------------------------------------------------------- objects
    async def _spool(
        self, body: AsyncIterator[bytes], checksum_algorithm: str | None
    ) -> tuple[IO[bytes], int, str, str | None]:
        """Body -> temp file (disk, not memory); returns it rewound with size, MD5 hex
        and the base64 checksum."""
        spool = await asyncio.to_thread(tempfile.TemporaryFile)
        try:
            spooled = await spool_body(
                body, spool.write, limit=MAX_SINGLE_PUT, checksum_algorithm=checksum_algorithm
            )
            await asyncio.to_thread(spool.seek, 0)
        except BaseException:
            spool.close()
            raise
        return spool, spooled.size, spooled.md5, spooled.checksum

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
    ) -> ObjectInfo:
        check_key(key)
        tags = validate_tags(list((tags or {}).items()))
        check_encryption(encryption)
        if condition:  # fail before spooling a body that could only be thrown away
            condition.check(key, await self._current_etag(bucket, key))
        spool, size, md5, checksum = await self._spool(body, checksum_algorithm)
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Body": spool,
            "ContentLength": size,
            "Metadata": dict(metadata or {}),
            **_header_params(headers),
        }
        if content_type:
            params["ContentType"] = content_type
        params.update(_write_params(tags, encryption, condition))
        checksums: dict[str, str] = {}
        if checksum_algorithm and checksum:
            algorithm = checksum_algorithm.upper()
            # Both: the algorithm makes the service keep it, the value makes it verify.
            params["ChecksumAlgorithm"] = algorithm
            params[f"Checksum{algorithm}"] = checksum
            checksums[algorithm] = checksum
        try:
            response = await self._call("put_object", **params)
        finally:
            spool.close()
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            etag=response.get("ETag", md5).strip('"'),
            last_modified=time.time(),
            content_type=content_type,
            metadata=dict(metadata or {}),
            headers=dict(headers or {}),
            checksums=checksums,
            encryption=response.get("ServerSideEncryption"),
            tag_count=len(tags),
        )

    async def _current_etag(self, bucket: str, key: str) -> str | None:
        try:
            return (await self.head_object(bucket, key)).etag
        except S3Error as exc:
            if exc.code != "NoSuchKey":
                raise
            return None

    async def head_object(self, bucket: str, key: str) -> ObjectInfo:
        response = await self._call("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return _info(bucket, key, response)

    async def get_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if byte_range is not None:
            params["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        response = await self._call("get_object", **params)
        info = _info(bucket, key, response)
        content_range = response.get("ContentRange")
        if content_range:  # "bytes a-b/total": the info describes the whole object
            info.size = int(content_range.rpartition("/")[2])
        return info, self._stream(response["Body"])

    async def _stream(self, body: Any) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._run(body.read, READ_CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete_object(
        self, bucket: str, key: str, condition: WriteCondition | None = None
    ) -> None:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if condition and condition.if_match is not None:
            params["IfMatch"] = condition.if_match
            if await self._current_etag(bucket, key) is None:
                raise no_such_key(key)  # S3's answer; some services delete silently
        await self._call("delete_object", **params)

    async def delete_objects(self, bucket: str, keys: list[str]) -> list[str]:
        deleted: list[str] = []
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            response = await self._call(
                "delete_objects",
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": False},
            )
            deleted.extend(item["Key"] for item in response.get("Deleted", []))
            for error in response.get("Errors", []):
                raise S3Error(
                    error.get("Message", ""),
                    code=error.get("Code", "InternalError"),
                    status=500,
                    extra={"Key": error.get("Key", "")},
                )
        return deleted

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
        check_key(key)
        check_encryption(encryption)
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "CopySource": {"Bucket": source_bucket, "Key": source_key},
            "MetadataDirective": "REPLACE" if replace_metadata else "COPY",
        }
        if replace_metadata:
            params["Metadata"] = dict(metadata or {})
            params.update(_header_params(headers))
            if content_type:
                params["ContentType"] = content_type
        if tags is not None:
            params["TaggingDirective"] = "REPLACE"
        params.update(_write_params(validate_tags(list((tags or {}).items())), encryption, None))
        if condition:
            condition.check(key, await self._current_etag(bucket, key))
        await self._call("copy_object", **params)
        return await self.head_object(bucket, key)

    async def object_parts(self, bucket: str, key: str) -> list[PartInfo] | None:
        # HeadObject with partNumber gives each part's size (and the parts count).
        first = await self._call("head_object", Bucket=bucket, Key=key, PartNumber=1)
        count = first.get("PartsCount")
        if not count:
            return None
        info = _info(bucket, key, first)
        parts = [PartInfo(1, first["ContentLength"], "", info.last_modified)]
        for number in range(2, count + 1):
            response = await self._call("head_object", Bucket=bucket, Key=key, PartNumber=number)
            parts.append(PartInfo(number, response["ContentLength"], "", info.last_modified))
        return parts

    # ---------------------------------------------------------------- tagging
    async def get_object_tagging(self, bucket: str, key: str) -> dict[str, str]:
        response = await self._call("get_object_tagging", Bucket=bucket, Key=key)
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}

    async def put_object_tagging(self, bucket: str, key: str, tags: dict[str, str]) -> None:
        tag_set = [{"Key": k, "Value": v} for k, v in validate_tags(list(tags.items())).items()]
        await self._call("put_object_tagging", Bucket=bucket, Key=key, Tagging={"TagSet": tag_set})

    async def delete_object_tagging(self, bucket: str, key: str) -> None:
        await self._call("delete_object_tagging", Bucket=bucket, Key=key)

    # ---------------------------------------------------------------- bucket CORS
    async def get_bucket_cors(self, bucket: str) -> list[CorsRule]:
        try:
            response = await self._call("get_bucket_cors", Bucket=bucket)
        except S3Error as exc:
            if exc.code == "NoSuchCORSConfiguration":
                raise no_such_cors(bucket) from None
            raise
        return [
            CorsRule(
                allowed_methods=list(rule.get("AllowedMethods", [])),
                allowed_origins=list(rule.get("AllowedOrigins", [])),
                allowed_headers=list(rule.get("AllowedHeaders", [])),
                expose_headers=list(rule.get("ExposeHeaders", [])),
                max_age_seconds=rule.get("MaxAgeSeconds"),
                id=rule.get("ID"),
            )
            for rule in response.get("CORSRules", [])
        ]

    async def put_bucket_cors(self, bucket: str, rules: list[CorsRule]) -> None:
        cors_rules = []
        for rule in rules:
            item: dict[str, Any] = {
                "AllowedMethods": rule.allowed_methods,
                "AllowedOrigins": rule.allowed_origins,
            }
            if rule.allowed_headers:
                item["AllowedHeaders"] = rule.allowed_headers
            if rule.expose_headers:
                item["ExposeHeaders"] = rule.expose_headers
            if rule.max_age_seconds is not None:
                item["MaxAgeSeconds"] = rule.max_age_seconds
            if rule.id is not None:
                item["ID"] = rule.id
            cors_rules.append(item)
        await self._call(
            "put_bucket_cors", Bucket=bucket, CORSConfiguration={"CORSRules": cors_rules}
        )

    async def delete_bucket_cors(self, bucket: str) -> None:
        await self._call("delete_bucket_cors", Bucket=bucket)

    async def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        start_after: str = "",
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        params: dict[str, Any] = {"Bucket": bucket, "MaxKeys": max_keys, "Prefix": prefix}
        if delimiter:
            params["Delimiter"] = delimiter
        if start_after:
            params["StartAfter"] = start_after
        if continuation_token:
            params["ContinuationToken"] = continuation_token
        response = await self._call("list_objects_v2", **params)
        return ListPage(
            objects=[
                ObjectInfo(
                    bucket=bucket,
                    key=item["Key"],
                    size=item["Size"],
                    etag=item["ETag"].strip('"'),
                    last_modified=item["LastModified"].timestamp(),
                )
                for item in response.get("Contents", [])
            ],
            common_prefixes=[p["Prefix"] for p in response.get("CommonPrefixes", [])],
            truncated=bool(response.get("IsTruncated")),
            next_token=response.get("NextContinuationToken"),
        )

    # ---------------------------------------------------------------- multipart
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
    ) -> UploadInfo:
        check_key(key)
        algorithm = checksum_algorithm.upper() if checksum_algorithm else None
        if algorithm:
            new_checksum(algorithm)  # validates the name
        kind = checksum_type_for(algorithm, checksum_type)
        check_encryption(encryption)
        tags = validate_tags(list((tags or {}).items()))
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Metadata": dict(metadata or {}),
            **_header_params(headers),
            **_write_params(tags, encryption, None),
        }
        if content_type:
            params["ContentType"] = content_type
        if algorithm:
            params["ChecksumAlgorithm"] = algorithm
            params["ChecksumType"] = kind
        response = await self._call("create_multipart_upload", **params)
        return UploadInfo(
            bucket=bucket,
            key=key,
            upload_id=response["UploadId"],
            initiated=time.time(),
            content_type=content_type,
            metadata=dict(metadata or {}),
            headers=dict(headers or {}),
            checksum_algorithm=algorithm,
            checksum_type=kind,
            tags=tags,
            encryption=encryption,
        )

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterator[bytes],
        *,
        checksum_algorithm: str | None = None,
    ) -> PartInfo:
        # NoSuchUpload before spooling a body that could only be thrown away.
        listing = await self._call(
            "list_parts", Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=1
        )
        algorithm = (checksum_algorithm or listing.get("ChecksumAlgorithm") or "").upper() or None
        spool, size, _md5, checksum = await self._spool(body, algorithm)
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": part_number,
            "Body": spool,
            "ContentLength": size,
        }
        if algorithm and checksum:
            params[f"Checksum{algorithm}"] = checksum
        try:
            response = await self._call("upload_part", **params)
        finally:
            spool.close()
        etag = response["ETag"].strip('"')
        return PartInfo(part_number, size, etag, time.time(), checksum, algorithm)

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
        listed = validate_part_list(parts)
        try:
            stored = await self._all_parts(bucket, key, upload_id)
        except S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise
            return await completed_before(self, bucket, key, upload_id, listed)
        sizes = {p.part_number: p.size for p in stored}
        if object_size is not None:
            total = sum(sizes.get(p.part_number, 0) for p in listed)
            if total != object_size:
                raise object_size_mismatch(object_size, total)
        # The whole-object checksum the client sent is checked here too: a service may
        # not (moto does not), and the answer must not depend on the backend.
        if checksum is not None:
            algorithm = checksum[0]
            # The upload's checksum type: as named, else as the value shows it (a
            # composite checksum ends in "-<parts>").
            named = checksum_type
            if named is None:
                named = "COMPOSITE" if "-" in checksum[1] else "FULL_OBJECT"
            kind = checksum_type_for(checksum[0], named)
            values = [(sizes.get(p.part_number, 0), p.checksums.get(algorithm)) for p in listed]
            if all(value for _, value in values) and kind:
                computed = combined_checksum(
                    algorithm, kind, [(size, value or "") for size, value in values]
                )
                check_completion_checksum(algorithm, {algorithm: computed}, checksum)
        if condition:
            condition.check(key, await self._current_etag(bucket, key))
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {
                "Parts": [
                    {
                        "PartNumber": p.part_number,
                        "ETag": f'"{p.etag.strip(chr(34))}"',
                        **{f"Checksum{a}": v for a, v in p.checksums.items()},
                    }
                    for p in listed
                ]
            },
            **_write_params({}, None, condition),
        }
        if checksum is not None:
            params[f"Checksum{checksum[0]}"] = checksum[1]
        if checksum_type is not None:
            params["ChecksumType"] = checksum_type.upper()
        await self._call("complete_multipart_upload", **params)
        return await self.head_object(bucket, key)

    async def _all_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        parts: list[PartInfo] = []
        marker = 0
        while True:
            response = await self._call(
                "list_parts", Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
            )
            parts.extend(_part(p) for p in response.get("Parts", []))
            if not response.get("IsTruncated") or not response.get("Parts"):
                return parts
            marker = int(response.get("NextPartNumberMarker") or parts[-1].part_number)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self._call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        return await self._all_parts(bucket, key, upload_id)

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]:
        response = await self._call("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
        return [
            UploadInfo(
                bucket=bucket,
                key=u["Key"],
                upload_id=u["UploadId"],
                initiated=u["Initiated"].timestamp(),
            )
            for u in response.get("Uploads", [])
        ]


def _header_params(headers: dict[str, str] | None) -> dict[str, str]:
    return {
        _HEADER_PARAMS[name]: value
        for name, value in (headers or {}).items()
        if name in _HEADER_PARAMS
    }


def _write_params(
    tags: dict[str, str], encryption: str | None, condition: WriteCondition | None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if tags:
        params["Tagging"] = urlencode(tags)
    if encryption:
        params["ServerSideEncryption"] = encryption
    if condition and condition.if_match is not None:
        params["IfMatch"] = condition.if_match
    if condition and condition.if_none_match is not None:
        params["IfNoneMatch"] = condition.if_none_match
    return params


def _part(item: dict[str, Any]) -> PartInfo:
    algorithm = next((a for a in CHECKSUM_ALGORITHMS if item.get(f"Checksum{a}")), None)
    return PartInfo(
        item["PartNumber"],
        item["Size"],
        item["ETag"].strip('"'),
        item["LastModified"].timestamp(),
        item.get(f"Checksum{algorithm}") if algorithm else None,
        algorithm,
    )


def _info(bucket: str, key: str, response: dict[str, Any]) -> ObjectInfo:
    headers = {
        name: response[param] for name, param in _HEADER_PARAMS.items() if response.get(param)
    }
    etag = response["ETag"].strip('"')
    checksums = {
        algorithm: response[f"Checksum{algorithm}"]
        for algorithm in CHECKSUM_ALGORITHMS
        if response.get(f"Checksum{algorithm}")
    }
    if "-" in etag and response.get("ChecksumType") != "FULL_OBJECT":
        # A composite checksum is "<base64>-<parts>"; some services leave the count off.
        count = etag.rpartition("-")[2]
        checksums = {a: v if "-" in v else f"{v}-{count}" for a, v in checksums.items()}
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=response["ContentLength"],
        etag=etag,
        last_modified=response["LastModified"].timestamp(),
        content_type=response.get("ContentType"),
        metadata=dict(response.get("Metadata") or {}),
        headers=headers,
        checksums=checksums,
        encryption=response.get("ServerSideEncryption"),
        tag_count=int(response.get("TagCount") or 0),
    )


def _translate(exc: ClientError, params: dict[str, Any]) -> S3Error:
    """A backend ClientError as the same S3 error (HEAD errors carry no code: infer it)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "InternalError"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
    if code in ("404", "NotFound"):
        if "Key" in params:
            return no_such_key(params["Key"])
        return no_such_bucket(params.get("Bucket", ""))
    extra = {k: str(v) for k, v in error.items() if k in ("BucketName", "Key", "UploadId")}
    return S3Error(str(error.get("Message", code)), code=code, status=status, extra=extra)
