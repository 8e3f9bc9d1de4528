"""The S3 API (rest-xml, path-style) on the front door, over an ObjectBackend.

The front door has verified the request's SigV4 signature; this module verifies the
payload itself (see s3_chunked), maps operations to the backend, and renders S3's XML.
Errors are raised as S3Error; frontdoor/errors.py renders them.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from sagequeue.domain.errors import AccessDenied, AuthFailure, S3Error, ServiceError, SignatureError
from sagequeue.domain.validation import wire_int
from sagequeue.frontdoor.errors import WireProtocol, error_response
from sagequeue.frontdoor.http import Request, RequestTooLarge, Response
from sagequeue.frontdoor.s3_chunked import upload_body
from sagequeue.frontdoor.sigv4 import (
    MAX_CLOCK_SKEW_SECONDS,
    MAX_PRESIGN_EXPIRES_SECONDS,
    AuthContext,
)
from sagequeue.ports import ObjectInfo
from sagequeue.stores.objects import (
    MAX_SINGLE_PUT,
    ObjectBackend,
    check_bucket_name,
    check_key,
)

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
MAX_XML_BODY = 2 * 1024 * 1024
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
# Object headers S3 stores and returns as they were sent.
STORED_HEADERS = (
    "content-encoding",
    "content-disposition",
    "cache-control",
    "content-language",
    "expires",
)
# Response header overrides a (presigned) GET may ask for.
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
# Bucket subresources that exist in S3 but are not offered here.
UNSUPPORTED_SUBRESOURCES = (
    "acl",
    "analytics",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "tagging",
    "versioning",
    "versions",
    "website",
    "accelerate",
    "legal-hold",
    "retention",
    "torrent",
    "attributes",
    "restore",
    "select",
)


def iso8601(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def _xml(root: str, inner: str) -> bytes:
    return f'{XML_DECLARATION}<{root} xmlns="{XMLNS}">{inner}</{root}>'.encode()


def _el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def _xml_response(
    body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None
) -> Response:
    return Response(status, [("content-type", "application/xml"), *(headers or [])], body)


def _method_not_allowed(method: str, resource_type: str) -> S3Error:
    return S3Error(
        "The specified method is not allowed against this resource.",
        code="MethodNotAllowed",
        status=405,
        extra={"Method": method, "ResourceType": resource_type},
    )


def _not_implemented(what: str) -> S3Error:
    return S3Error(
        f"A header or query you provided implies functionality that is not implemented: {what}",
        code="NotImplemented",
        status=501,
    )


def _malformed_xml() -> S3Error:
    return S3Error(
        "The XML you provided was not well-formed or did not validate against our published schema",
        code="MalformedXML",
        status=400,
    )


def _parse_xml(body: bytes) -> ET.Element:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise _malformed_xml() from None
    # Drop namespaces so lookups are by local name.
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.rpartition("}")[2]
    return root


def _int_param(query: dict[str, str], name: str, default: int, maximum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = wire_int(raw, signed=True)
    except ValueError:
        raise S3Error(
            "Provided " + name + " not an integer or within integer range",
            code="InvalidArgument",
            status=400,
            extra={"ArgumentName": name, "ArgumentValue": raw},
        ) from None
    if value < 0:
        raise S3Error(
            "Argument " + name + " must be an integer between 0 and 2147483647",
            code="InvalidArgument",
            status=400,
            extra={"ArgumentName": name, "ArgumentValue": raw},
        )
    return min(value, maximum)


def _encode_token(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode("utf-8", "surrogatepass")).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogatepass")
    except (ValueError, UnicodeDecodeError):
        raise S3Error(
            "The continuation token provided is incorrect",
            code="InvalidArgument",
            status=400,
            extra={"ArgumentName": "continuation-token"},
        ) from None


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """An inclusive (first, last) for a single ``bytes=`` range; None to ignore it
    (malformed or multiple ranges, as S3 does); InvalidRange when unsatisfiable."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first_text == "":
            suffix = wire_int(last_text)
            if suffix <= 0 or size == 0:
                raise _invalid_range(size)
            return max(0, size - suffix), size - 1
        first = wire_int(first_text)
        last = wire_int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first > last and last_text:
        return None
    if first >= size:
        raise _invalid_range(size)
    return first, min(last, size - 1)


def _invalid_range(size: int) -> S3Error:
    return S3Error(
        "The requested range is not satisfiable",
        code="InvalidRange",
        status=416,
        extra={"RangeRequested": "", "ActualObjectSize": str(size)},
    )


def _parse_http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp()


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    return any(c == "*" or c.strip('"') == etag for c in candidates)


class S3Api:
    protocol = WireProtocol.REST_XML

    def __init__(self, get_store: Callable[[], ObjectBackend | None]) -> None:
        self._get_store = get_store

    @property
    def store(self) -> ObjectBackend:
        store = self._get_store()
        if store is None:
            raise S3Error("The service is starting.", code="ServiceUnavailable", status=503)
        return store

    # ---------------------------------------------------------------- routing
    async def handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except ServiceError as exc:
            if not _carries_body(request):
                raise
            # The body may be partly or wholly unread (errors found before or while
            # reading it, or a client waiting for "100 Continue"): its bytes must not be
            # parsed as the next request on this connection, so close it.
            response = error_response(exc, self.protocol, request.request_id, request.path)
            response.headers.append(("connection", "close"))
            return response

    async def _route(self, request: Request) -> Response:
        try:
            path = unquote(request.raw_path, errors="strict")
        except UnicodeDecodeError:
            raise S3Error(
                "Couldn't parse the specified URI.", code="InvalidURI", status=400
            ) from None
        bucket, _slash, key = path.removeprefix("/").partition("/")
        method = request.method
        if not bucket:
            if method == "GET":
                return await self.list_buckets(request)
            raise _method_not_allowed(method, "SERVICE")
        if not key:
            return await self._bucket_operation(request, method, bucket)
        return await self._object_operation(request, method, bucket, key)

    async def _bucket_operation(self, request: Request, method: str, bucket: str) -> Response:
        query = request.query
        for name in UNSUPPORTED_SUBRESOURCES:
            if name in query:
                raise _not_implemented(f"?{name}")
        if method == "GET":
            if "location" in query:
                return await self.get_bucket_location(request, bucket)
            if "uploads" in query:
                return await self.list_multipart_uploads(request, bucket)
            if query.get("list-type") == "2":
                return await self.list_objects_v2(request, bucket)
            return await self.list_objects_v1(request, bucket)
        if method == "PUT":
            return await self.create_bucket(request, bucket)
        if method == "HEAD":
            await self.store.head_bucket(bucket)
            return Response(
                200,
                [("x-amz-bucket-region", _region(request)), ("content-type", "application/xml")],
            )
        if method == "DELETE":
            await self.store.delete_bucket(bucket)
            return Response(204)
        if method == "POST" and "delete" in query:
            return await self.delete_objects(request, bucket)
        raise _method_not_allowed(method, "BUCKET")

    async def _object_operation(
        self, request: Request, method: str, bucket: str, key: str
    ) -> Response:
        query = request.query
        for name in UNSUPPORTED_SUBRESOURCES:
            if name in query:
                raise _not_implemented(f"?{name}")
        check_key(key)
        if method == "GET":
            if "uploadId" in query:
                return await self.list_parts(request, bucket, key)
            return await self.get_object(request, bucket, key, head=False)
        if method == "HEAD":
            return await self.get_object(request, bucket, key, head=True)
        if method == "PUT":
            if "uploadId" in query or "partNumber" in query:
                if "x-amz-copy-source" in request.headers:
                    raise _not_implemented("UploadPartCopy")
                return await self.upload_part(request, bucket, key)
            if "x-amz-copy-source" in request.headers:
                return await self.copy_object(request, bucket, key)
            return await self.put_object(request, bucket, key)
        if method == "DELETE":
            if "uploadId" in query:
                await self.store.abort_multipart_upload(bucket, key, query["uploadId"])
                return Response(204)
            await self.store.delete_object(bucket, key)
            return Response(204)
        if method == "POST":
            if "uploads" in query:
                return await self.create_multipart_upload(request, bucket, key)
            if "uploadId" in query:
                return await self.complete_multipart_upload(request, bucket, key)
        raise _method_not_allowed(method, "OBJECT")

    async def _small_body(self, request: Request) -> bytes:
        """A small (XML) request body, verified like any payload."""
        body = upload_body(request.headers, request.stream(), request.auth, max_length=MAX_XML_BODY)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in body.stream:
                size += len(chunk)
                if size > MAX_XML_BODY:
                    raise RequestTooLarge(size)
                chunks.append(chunk)
        except RequestTooLarge:
            raise S3Error(
                "Your request was too big.", code="MaxMessageLengthExceeded", status=400
            ) from None
        return b"".join(chunks)

    # ---------------------------------------------------------------- buckets
    async def list_buckets(self, request: Request) -> Response:
        buckets = await self.store.list_buckets()
        items = "".join(
            f"<Bucket>{_el('Name', b.name)}{_el('CreationDate', iso8601(b.created))}</Bucket>"
            for b in buckets
        )
        owner = f"<Owner>{_el('ID', OWNER_ID)}{_el('DisplayName', 'sagequeue')}</Owner>"
        return _xml_response(_xml("ListAllMyBucketsResult", f"{owner}<Buckets>{items}</Buckets>"))

    async def create_bucket(self, request: Request, bucket: str) -> Response:
        check_bucket_name(bucket)
        await self._small_body(request)  # CreateBucketConfiguration: the region is ours
        await self.store.create_bucket(bucket)
        return Response(200, [("location", f"/{bucket}")])

    async def get_bucket_location(self, request: Request, bucket: str) -> Response:
        await self.store.head_bucket(bucket)
        region = _region(request)
        value = "" if region == "us-east-1" else escape(region)
        return _xml_response(_xml("LocationConstraint", value))

    async def list_objects_v2(self, request: Request, bucket: str) -> Response:
        query = request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        start_after = query.get("start-after", "")
        token = query.get("continuation-token")
        url_encode = query.get("encoding-type") == "url"
        max_keys = _int_param(query, "max-keys", 1000, 1000)
        page = await self.store.list_objects(
            bucket,
            prefix=prefix,
            delimiter=delimiter,
            start_after=start_after,
            continuation_token=_decode_token(token) if token else None,
            max_keys=max_keys,
        )
        enc = _encoder(url_encode)
        parts = [
            _el("Name", bucket),
            f"<Prefix>{enc(prefix)}</Prefix>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
            f"<Delimiter>{enc(delimiter)}</Delimiter>" if delimiter else "",
            f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>",
            _contents(page.objects, enc),
            _common_prefixes(page.common_prefixes, enc),
            f"<KeyCount>{len(page.objects) + len(page.common_prefixes)}</KeyCount>",
            _el("ContinuationToken", token) if token else "",
            _el("NextContinuationToken", _encode_token(page.next_token))
            if page.truncated and page.next_token
            else "",
            f"<StartAfter>{enc(start_after)}</StartAfter>" if start_after else "",
            "<EncodingType>url</EncodingType>" if url_encode else "",
        ]
        return _xml_response(_xml("ListBucketResult", "".join(parts)))

    async def list_objects_v1(self, request: Request, bucket: str) -> Response:
        query = request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        marker = query.get("marker", "")
        url_encode = query.get("encoding-type") == "url"
        max_keys = _int_param(query, "max-keys", 1000, 1000)
        page = await self.store.list_objects(
            bucket, prefix=prefix, delimiter=delimiter, start_after=marker, max_keys=max_keys
        )
        enc = _encoder(url_encode)
        last = None
        if page.truncated:
            candidates = [o.key for o in page.objects] + page.common_prefixes
            last = max(candidates) if candidates else None
        parts = [
            _el("Name", bucket),
            f"<Prefix>{enc(prefix)}</Prefix>",
            f"<Marker>{enc(marker)}</Marker>",
            f"<NextMarker>{enc(last)}</NextMarker>" if last and delimiter else "",
            f"<MaxKeys>{max_keys}</MaxKeys>",
            f"<Delimiter>{enc(delimiter)}</Delimiter>" if delimiter else "",
            f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>",
            _contents(page.objects, enc),
            _common_prefixes(page.common_prefixes, enc),
            "<EncodingType>url</EncodingType>" if url_encode else "",
        ]
        return _xml_response(_xml("ListBucketResult", "".join(parts)))

    async def delete_objects(self, request: Request, bucket: str) -> Response:
        root = _parse_xml(await self._small_body(request))
        if root.tag != "Delete":
            raise _malformed_xml()
        quiet = (root.findtext("Quiet") or "").strip().lower() == "true"
        keys = [(o.findtext("Key") or "") for o in root.findall("Object")]
        if not keys or len(keys) > 1000:
            raise _malformed_xml()
        await self.store.head_bucket(bucket)
        results: list[str] = []
        for key in keys:
            try:
                check_key(key)
                request.authorize("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{key}")
                await self.store.delete_object(bucket, key)
            except (S3Error, AccessDenied) as exc:
                results.append(
                    f"<Error>{_el('Key', key)}{_el('Code', exc.code)}"
                    f"{_el('Message', exc.message)}</Error>"
                )
                continue
            if not quiet:
                results.append(f"<Deleted>{_el('Key', key)}</Deleted>")
        return _xml_response(_xml("DeleteResult", "".join(results)))

    # ---------------------------------------------------------------- objects
    async def put_object(self, request: Request, bucket: str, key: str) -> Response:
        await self.store.head_bucket(bucket)  # NoSuchBucket before reading any body
        body = upload_body(
            request.headers, request.stream(), request.auth, max_length=MAX_SINGLE_PUT
        )
        content_type, metadata, headers = _object_attributes(request.headers)
        info = await self.store.put_object(
            bucket,
            key,
            body.stream,
            content_type=content_type,
            metadata=metadata,
            headers=headers,
            checksum_algorithm=body.checksum_algorithm,
        )
        return Response(200, [("etag", f'"{info.etag}"'), *_checksum_headers(info)])

    async def get_object(self, request: Request, bucket: str, key: str, *, head: bool) -> Response:
        headers = request.headers
        info = await self.store.head_object(bucket, key)
        not_modified = _check_preconditions(headers, info)
        if not_modified:
            return Response(
                304, [("etag", f'"{info.etag}"'), ("last-modified", http_date(info.last_modified))]
            )
        byte_range = None
        part_number = request.query.get("partNumber")
        if part_number not in (None, "1"):
            raise _invalid_part_number()
        if "range" in headers:
            try:
                byte_range = _parse_range(headers["range"], info.size)
            except S3Error as exc:
                exc.extra["RangeRequested"] = headers["range"]
                raise
        status = 200
        response_headers = _object_headers(info)
        if byte_range is not None:
            status = 206
            first, last = byte_range
            response_headers.append(("content-range", f"bytes {first}-{last}/{info.size}"))
            length = last - first + 1
        else:
            length = info.size
            if headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
                response_headers.extend(_checksum_headers(info))
        for param, header in RESPONSE_OVERRIDES.items():
            if param in request.query:
                response_headers = [(k, v) for k, v in response_headers if k != header]
                response_headers.append((header, request.query[param]))
        response_headers.append(("content-length", str(length)))
        if head:
            return Response(status, response_headers, b"")
        if length == 0:
            return Response(status, response_headers, b"")
        stored, stream = await self.store.get_object(bucket, key, byte_range)
        if stored.etag != info.etag:
            # Replaced between HEAD and GET: the headers would lie about the body.
            await _close(stream)
            raise S3Error(
                "The object changed while it was being read; retry.",
                code="InternalError",
                status=500,
            )
        return Response(status, response_headers, stream)

    async def copy_object(self, request: Request, bucket: str, key: str) -> Response:
        source_bucket, source_key = _copy_source(request.headers["x-amz-copy-source"])
        directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error(
                "Unknown metadata directive.",
                code="InvalidArgument",
                status=400,
                extra={"ArgumentName": "x-amz-metadata-directive", "ArgumentValue": directive},
            )
        replace = directive == "REPLACE"
        if (source_bucket, source_key) == (bucket, key) and not replace:
            raise S3Error(
                "This copy request is illegal because it is trying to copy an object to itself "
                "without changing the object's metadata, storage class, website redirect "
                "location or encryption attributes.",
                code="InvalidRequest",
                status=400,
            )
        source = await self.store.head_object(source_bucket, source_key)
        _check_copy_preconditions(request.headers, source)
        content_type, metadata, headers = _object_attributes(request.headers)
        info = await self.store.copy_object(
            source_bucket,
            source_key,
            bucket,
            key,
            replace_metadata=replace,
            content_type=content_type,
            metadata=metadata,
            headers=headers,
        )
        body = _xml(
            "CopyObjectResult",
            _el("LastModified", iso8601(info.last_modified)) + _el("ETag", f'"{info.etag}"'),
        )
        return _xml_response(body)

    # ---------------------------------------------------------------- multipart
    async def create_multipart_upload(self, request: Request, bucket: str, key: str) -> Response:
        content_type, metadata, headers = _object_attributes(request.headers)
        algorithm = request.headers.get("x-amz-checksum-algorithm")
        upload = await self.store.create_multipart_upload(
            bucket,
            key,
            content_type=content_type,
            metadata=metadata,
            headers=headers,
            checksum_algorithm=algorithm.upper() if algorithm else None,
        )
        extra = (
            [("x-amz-checksum-algorithm", upload.checksum_algorithm)]
            if (upload.checksum_algorithm)
            else []
        )
        body = _xml(
            "InitiateMultipartUploadResult",
            _el("Bucket", bucket) + _el("Key", key) + _el("UploadId", upload.upload_id),
        )
        return _xml_response(body, headers=extra)

    async def upload_part(self, request: Request, bucket: str, key: str) -> Response:
        query = request.query
        upload_id = query.get("uploadId")
        if upload_id is None:
            raise S3Error("partNumber requires uploadId", code="InvalidRequest", status=400)
        try:
            part_number = wire_int(query.get("partNumber", ""))
        except ValueError:
            raise _invalid_part_number() from None
        await self.store.list_parts(bucket, key, upload_id)  # NoSuchUpload before the body
        body = upload_body(
            request.headers, request.stream(), request.auth, max_length=MAX_SINGLE_PUT
        )
        part = await self.store.upload_part(
            bucket,
            key,
            upload_id,
            part_number,
            body.stream,
            checksum_algorithm=body.checksum_algorithm,
        )
        headers = [("etag", f'"{part.etag}"')]
        if body.checksum_algorithm and part.checksum:
            headers.append((f"x-amz-checksum-{body.checksum_algorithm.lower()}", part.checksum))
        return Response(200, headers)

    async def complete_multipart_upload(self, request: Request, bucket: str, key: str) -> Response:
        upload_id = request.query["uploadId"]
        root = _parse_xml(await self._small_body(request))
        if root.tag != "CompleteMultipartUpload":
            raise _malformed_xml()
        parts: list[tuple[int, str]] = []
        for element in root.findall("Part"):
            try:
                number = wire_int((element.findtext("PartNumber") or "").strip())
            except ValueError:
                raise _malformed_xml() from None
            parts.append((number, (element.findtext("ETag") or "").strip().strip('"')))
        info = await self.store.complete_multipart_upload(bucket, key, upload_id, parts)
        host = request.headers.get("host", "localhost")
        location = f"http://{host}/{quote(bucket)}/{quote(key)}"
        checksum_xml = "".join(
            _el(f"Checksum{algorithm}", value) for algorithm, value in info.checksums.items()
        )
        body = _xml(
            "CompleteMultipartUploadResult",
            _el("Location", location)
            + _el("Bucket", bucket)
            + _el("Key", key)
            + _el("ETag", f'"{info.etag}"')
            + checksum_xml,
        )
        return _xml_response(body)

    async def list_parts(self, request: Request, bucket: str, key: str) -> Response:
        query = request.query
        upload_id = query["uploadId"]
        marker = _int_param(query, "part-number-marker", 0, 10_000)
        max_parts = _int_param(query, "max-parts", 1000, 1000)
        parts = [
            p for p in await self.store.list_parts(bucket, key, upload_id) if p.part_number > marker
        ]
        page, truncated = parts[:max_parts], len(parts) > max_parts
        items = "".join(
            "<Part>"
            + _el("PartNumber", p.part_number)
            + _el("LastModified", iso8601(p.last_modified))
            + _el("ETag", f'"{p.etag}"')
            + _el("Size", p.size)
            + "</Part>"
            for p in page
        )
        body = _xml(
            "ListPartsResult",
            _el("Bucket", bucket)
            + _el("Key", key)
            + _el("UploadId", upload_id)
            + _el("PartNumberMarker", marker)
            + (_el("NextPartNumberMarker", page[-1].part_number) if page else "")
            + _el("MaxParts", max_parts)
            + _el("IsTruncated", "true" if truncated else "false")
            + items
            + _el("StorageClass", "STANDARD"),
        )
        return _xml_response(body)

    async def list_multipart_uploads(self, request: Request, bucket: str) -> Response:
        prefix = request.query.get("prefix", "")
        uploads = await self.store.list_multipart_uploads(bucket, prefix)
        items = "".join(
            "<Upload>"
            + _el("Key", u.key)
            + _el("UploadId", u.upload_id)
            + _el("Initiated", iso8601(u.initiated))
            + _el("StorageClass", "STANDARD")
            + "</Upload>"
            for u in uploads
        )
        body = _xml(
            "ListMultipartUploadsResult",
            _el("Bucket", bucket)
            + "<KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>"
            + _el("Prefix", prefix)
            + _el("MaxUploads", 1000)
            + "<IsTruncated>false</IsTruncated>"
            + items,
        )
        return _xml_response(body)


# ======================================================================================
# Helpers
# ======================================================================================


def _carries_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


def _region(request: Request) -> str:
    return request.auth.region if request.auth is not None else "us-east-1"


def _encoder(url_encode: bool) -> Callable[[str], str]:
    if url_encode:
        return lambda value: quote(value, safe="/")
    return escape


def _contents(objects: list[ObjectInfo], enc: Callable[[str], str]) -> str:
    return "".join(
        "<Contents>"
        f"<Key>{enc(o.key)}</Key>"
        + _el("LastModified", iso8601(o.last_modified))
        + _el("ETag", f'"{o.etag}"')
        + _el("Size", o.size)
        + _el("StorageClass", "STANDARD")
        + "</Contents>"
        for o in objects
    )


def _common_prefixes(prefixes: list[str], enc: Callable[[str], str]) -> str:
    return "".join(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in prefixes)


def _object_attributes(
    headers: dict[str, str],
) -> tuple[str | None, dict[str, str], dict[str, str]]:
    """Content-Type, user metadata (x-amz-meta-*) and other stored headers of a request."""
    metadata = {
        name.removeprefix("x-amz-meta-"): value
        for name, value in headers.items()
        if name.startswith("x-amz-meta-")
    }
    stored: dict[str, str] = {}
    for name in STORED_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if name == "content-encoding":  # aws-chunked is transport, not the object's
            value = ",".join(
                e for e in (v.strip() for v in value.split(",")) if e and e != "aws-chunked"
            )
            if not value:
                continue
        stored[name] = value
    return headers.get("content-type"), metadata, stored


def _object_headers(info: ObjectInfo) -> list[tuple[str, str]]:
    headers = [
        ("etag", f'"{info.etag}"'),
        ("last-modified", http_date(info.last_modified)),
        ("content-type", info.content_type or DEFAULT_CONTENT_TYPE),
        ("accept-ranges", "bytes"),
    ]
    if info.etag.count("-") == 1:
        headers.append(("x-amz-mp-parts-count", info.etag.rpartition("-")[2]))
    headers.extend((name, value) for name, value in info.headers.items())
    headers.extend((f"x-amz-meta-{name}", value) for name, value in info.metadata.items())
    return headers


def _checksum_headers(info: ObjectInfo) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for algorithm, value in info.checksums.items():
        headers.append((f"x-amz-checksum-{algorithm.lower()}", value))
        headers.append(("x-amz-checksum-type", "COMPOSITE" if "-" in value else "FULL_OBJECT"))
    return headers


def _check_preconditions(headers: dict[str, str], info: ObjectInfo) -> bool:
    """Raise PreconditionFailed (412), or return True for 304 Not Modified."""
    modified = int(info.last_modified)
    if_match = headers.get("if-match")
    if_none_match = headers.get("if-none-match")
    if if_match is not None and not _etag_matches(if_match, info.etag):
        raise _precondition_failed("If-Match")
    if if_match is None and "if-unmodified-since" in headers:
        since = _parse_http_date(headers["if-unmodified-since"])
        if since is not None and modified > since:
            raise _precondition_failed("If-Unmodified-Since")
    if if_none_match is not None and _etag_matches(if_none_match, info.etag):
        return True
    if if_none_match is None and "if-modified-since" in headers:
        since = _parse_http_date(headers["if-modified-since"])
        if since is not None and modified <= since:
            return True
    return False


def _check_copy_preconditions(headers: dict[str, str], info: ObjectInfo) -> None:
    renamed = {
        name.removeprefix("x-amz-copy-source-"): value
        for name, value in headers.items()
        if name.startswith("x-amz-copy-source-if-")
    }
    if renamed and _check_preconditions(renamed, info):
        raise _precondition_failed("x-amz-copy-source-If-None-Match")


def _precondition_failed(condition: str) -> S3Error:
    return S3Error(
        "At least one of the pre-conditions you specified did not hold",
        code="PreconditionFailed",
        status=412,
        extra={"Condition": condition},
    )


def _invalid_part_number() -> S3Error:
    return S3Error(
        "The requested partnumber is not satisfiable", code="InvalidPartNumber", status=416
    )


def _copy_source(header: str) -> tuple[str, str]:
    source = unquote(header.partition("?")[0]).removeprefix("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise S3Error(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            code="InvalidArgument",
            status=400,
            extra={"ArgumentName": "x-amz-copy-source", "ArgumentValue": header},
        )
    return bucket, key


async def _close(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


# ======================================================================================
# Presigned URLs in the legacy query form (Signature Version 2)
# ======================================================================================

# Query parameters that are part of a V2 canonical resource (botocore's HmacV1Auth).
_V2_SUBRESOURCES = frozenset(
    [
        "accelerate",
        "acl",
        "cors",
        "defaultObjectAcl",
        "location",
        "logging",
        "partNumber",
        "policy",
        "requestPayment",
        "torrent",
        "versioning",
        "versionId",
        "versions",
        "website",
        "uploads",
        "uploadId",
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "delete",
        "lifecycle",
        "tagging",
        "restore",
        "storageClass",
        "notification",
        "replication",
        "analytics",
        "metrics",
        "inventory",
        "select",
        "select-type",
        "object-lock",
    ]
)


def is_presigned_v2(request: Request) -> bool:
    """A query-string-authenticated URL in the SigV2 form (``AWSAccessKeyId``,
    ``Signature``, ``Expires``), which boto3 and the AWS CLI v1 generate for S3 by
    default."""
    return "authorization" not in request.headers and "AWSAccessKeyId=" in request.query_string


def verify_presigned_v2(
    secret_for: Callable[[str], str | None], request: Request, now: float
) -> AuthContext:
    """Check a SigV2 presigned request; raises SignatureError, returns who signed."""
    query = request.query
    access_key = query.get("AWSAccessKeyId", "")
    signature = query.get("Signature")
    expires = query.get("Expires")
    if signature is None or expires is None:
        raise SignatureError(
            AuthFailure.INCOMPLETE,
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId "
            "parameters",
        )
    secret = secret_for(access_key)
    if secret is None:
        raise SignatureError(AuthFailure.UNKNOWN_KEY, "The AWS Access Key Id does not exist.")
    try:
        expires_at = wire_int(expires)
    except ValueError:
        raise SignatureError(AuthFailure.QUERY_MALFORMED, "Invalid Expires value") from None
    if now > expires_at:
        raise SignatureError(AuthFailure.EXPIRED, "Request has expired")
    if expires_at > now + MAX_PRESIGN_EXPIRES_SECONDS + MAX_CLOCK_SKEW_SECONDS:
        # SigV2 URLs carry no signing time: they are held to SigV4's longest life from
        # now, so that no URL outlives a week.
        raise SignatureError(
            AuthFailure.QUERY_MALFORMED,
            "Expires must be less than a week (604800 seconds) from now.",
        )
    headers = request.headers
    amz_headers = sorted(
        (name, ",".join(v.strip() for v in value.split(",")))
        for name, value in headers.items()
        if name.startswith("x-amz-")
    )
    subresources = sorted(
        (name, value)
        for name, _, value in (item.partition("=") for item in request.query_string.split("&"))
        if name in _V2_SUBRESOURCES
    )
    resource = request.raw_path or "/"
    if subresources:
        resource += "?" + "&".join(
            f"{name}={unquote(value)}" if value else name for name, value in subresources
        )
    string_to_sign = (
        f"{request.method}\n{headers.get('content-md5', '')}\n{headers.get('content-type', '')}"
        f"\n{expires}\n" + "".join(f"{name}:{value}\n" for name, value in amz_headers) + resource
    )
    expected = base64.b64encode(
        hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    ).decode()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError(AuthFailure.MISMATCH, "The request signature does not match.")
    return AuthContext(
        access_key=access_key,
        date=time.strftime("%Y%m%d", time.gmtime(now)),
        region="us-east-1",
        service="s3",
        amz_date=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)),
        signature=signature,
        signing_key=b"",
        payload_hash="UNSIGNED-PAYLOAD",
        presigned=True,
    )
