"""Object store on any S3 service (AWS S3, MinIO, Ceph RGW, R2, moto...) through boto3.

boto3 is blocking: every call runs in this store's thread pool, never on the event loop.
Bodies of unknown length are spooled to a temporary file on disk (S3 needs the length
up front), so memory stays bounded whatever the object size.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sagequeue.domain.errors import S3Error
from sagequeue.ports import ObjectInfo
from sagequeue.stores.objects import (
    MAX_SINGLE_PUT,
    READ_CHUNK,
    BucketInfo,
    ListPage,
    PartInfo,
    UploadInfo,
    check_bucket_name,
    check_key,
    no_such_bucket,
    no_such_key,
    spool_body,
    validate_part_list,
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
    ) -> ObjectInfo:
        check_key(key)
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
        import time

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
        )

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

    async def delete_object(self, bucket: str, key: str) -> None:
        await self._call("delete_object", Bucket=bucket, Key=key)

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
    ) -> ObjectInfo:
        check_key(key)
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
        await self._call("copy_object", **params)
        return await self.head_object(bucket, key)

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
    ) -> UploadInfo:
        check_key(key)
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Metadata": dict(metadata or {}),
            **_header_params(headers),
        }
        if content_type:
            params["ContentType"] = content_type
        response = await self._call("create_multipart_upload", **params)
        import time

        return UploadInfo(
            bucket=bucket,
            key=key,
            upload_id=response["UploadId"],
            initiated=time.time(),
            content_type=content_type,
            metadata=dict(metadata or {}),
            headers=dict(headers or {}),
            checksum_algorithm=checksum_algorithm,
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
        await self._call("list_parts", Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=1)
        spool, size, _md5, checksum = await self._spool(body, checksum_algorithm)
        try:
            response = await self._call(
                "upload_part",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=part_number,
                Body=spool,
                ContentLength=size,
            )
        finally:
            spool.close()
        import time

        return PartInfo(part_number, size, response["ETag"].strip('"'), time.time(), checksum)

    async def complete_multipart_upload(
        self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        validate_part_list(parts)
        await self._call(
            "complete_multipart_upload",
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": f'"{e.strip(chr(34))}"'} for n, e in parts]
            },
        )
        return await self.head_object(bucket, key)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self._call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        response = await self._call("list_parts", Bucket=bucket, Key=key, UploadId=upload_id)
        return [
            PartInfo(
                p["PartNumber"], p["Size"], p["ETag"].strip('"'), p["LastModified"].timestamp()
            )
            for p in response.get("Parts", [])
        ]

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


def _info(bucket: str, key: str, response: dict[str, Any]) -> ObjectInfo:
    headers = {
        name: response[param] for name, param in _HEADER_PARAMS.items() if response.get(param)
    }
    checksums = {
        algorithm: response[f"Checksum{algorithm}"]
        for algorithm in ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
        if response.get(f"Checksum{algorithm}")
    }
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=response["ContentLength"],
        etag=response["ETag"].strip('"'),
        last_modified=response["LastModified"].timestamp(),
        content_type=response.get("ContentType"),
        metadata=dict(response.get("Metadata") or {}),
        headers=headers,
        checksums=checksums,
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
