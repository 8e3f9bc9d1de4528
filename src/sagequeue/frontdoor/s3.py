"""The S3 API (rest-xml, path-style) on the front door, over an ObjectBackend.

The front door has verified the request's SigV4 signature; this module verifies the
payload itself (see s3_chunked), maps operations to the backend, and renders S3's XML.
Headers and sub-resources that would change what an object means but are not
implemented are refused with 501 NotImplemented, never ignored. Errors are raised as
S3Error; frontdoor/errors.py renders them.
"""

from __future__ import annotations

import base64
import email.errors
import email.header
import email.utils
import hashlib
import hmac
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qsl, quote, unquote
from xml.sax.saxutils import escape

from sagequeue.domain.errors import AccessDenied, AuthFailure, S3Error, ServiceError, SignatureError
from sagequeue.domain.validation import wire_int
from sagequeue.frontdoor import s3_cors
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
    CHECKSUM_ALGORITHMS,
    MAX_PART_NUMBER,
    MAX_SINGLE_PUT,
    CompletedPart,
    ObjectBackend,
    PartInfo,
    WriteCondition,
    check_bucket_name,
    check_key,
    etag_matches,
    precondition_failed,
    validate_tags,
)

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
OWNER_NAME = "sagequeue"
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
# Sub-resources that exist in S3 but are not offered here (501 NotImplemented).
UNSUPPORTED_SUBRESOURCES = (
    "analytics",
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
    "website",
    "accelerate",
    "legal-hold",
    "retention",
    "torrent",
    "restore",
    "select",
    "renameObject",
    "metadataConfiguration",
    "metadataTable",
    "abac",
)
OBJECT_ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
# Checksum algorithms S3 defines that this store does not compute.
UNSUPPORTED_CHECKSUMS = ("md5", "sha512", "xxhash64", "xxhash3", "xxhash128")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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


def _owner() -> str:
    return f"<Owner>{_el('ID', OWNER_ID)}{_el('DisplayName', OWNER_NAME)}</Owner>"


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


def _invalid_argument(message: str, name: str, value: str) -> S3Error:
    return S3Error(
        message,
        code="InvalidArgument",
        status=400,
        extra={"ArgumentName": name, "ArgumentValue": value},
    )


def _invalid_request(message: str) -> S3Error:
    return S3Error(message, code="InvalidRequest", status=400)


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


def _natural(raw: str | None, name: str, low: int, high: int) -> int | None:
    """An integer S3 takes as plain ASCII digits, within [low, high]; None when absent."""
    if raw is None:
        return None
    try:
        value = wire_int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise _invalid_argument(
            f"{name} must be an integer between {low} and {high}, inclusive", name, raw
        )
    return value


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


class S3Api:
    protocol = WireProtocol.REST_XML

    def __init__(
        self,
        get_store: Callable[[], ObjectBackend | None],
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
    ) -> None:
        self._get_store = get_store
        self.region = region
        self.account_id = account_id

    @property
    def store(self) -> ObjectBackend:
        store = self._get_store()
        if store is None:
            raise S3Error("The service is starting.", code="ServiceUnavailable", status=503)
        return store

    # ---------------------------------------------------------------- routing
    async def handle(self, request: Request) -> Response:
        try:
            response = await self._route(request)
        except ServiceError as exc:
            response = error_response(exc, self.protocol, request.request_id, request.path)
            if _carries_body(request):
                # The body may be partly or wholly unread (errors found before or while
                # reading it, or a client waiting for "100 Continue"): its bytes must not
                # be parsed as the next request on this connection, so close it.
                response.headers.append(("connection", "close"))
        if "origin" in request.headers:
            response.headers.extend(await self._cors_for(request))
        return response

    async def preflight(self, request: Request) -> Response:
        """A browser's CORS preflight (``OPTIONS``, unsigned), answered from the
        bucket's CORS rules."""
        try:
            bucket, key = _bucket_and_key(request)
            return await self._preflight(request, bucket, key)
        except ServiceError as exc:
            return error_response(exc, self.protocol, request.request_id, request.path)

    async def browser_post(self, request: Request) -> Response:
        """An HTML form upload (POST Object): not implemented."""
        response = error_response(
            _not_implemented("POST Object (browser-based uploads with an HTML form)"),
            self.protocol,
            request.request_id,
            request.path,
        )
        response.headers.append(("connection", "close"))
        return response

    async def _route(self, request: Request) -> Response:
        bucket, key = _bucket_and_key(request)
        method = request.method
        if not bucket:
            if method == "GET":
                return await self.list_buckets(request)
            raise _method_not_allowed(method, "SERVICE")
        if method == "OPTIONS":
            return await self._preflight(request, bucket, key)
        self._refuse_unimplemented(request, method, key)
        if not key:
            return await self._bucket_operation(request, method, bucket)
        return await self._object_operation(request, method, bucket, key)

    def _refuse_unimplemented(self, request: Request, method: str, key: str) -> None:
        """501 for what S3 would do and this store cannot; 400 / 403 for what S3 refuses."""
        query = request.query
        for name in UNSUPPORTED_SUBRESOURCES:
            if name in query:
                raise _not_implemented(f"?{name}")
        headers = request.headers
        for name, value in headers.items():
            if not name.startswith("x-amz-"):
                continue
            if name.startswith(
                (
                    "x-amz-server-side-encryption-customer-",
                    "x-amz-copy-source-server-side-encryption-customer-",
                )
            ):
                raise _not_implemented("server-side encryption with customer keys (SSE-C)")
            if name.startswith(
                ("x-amz-server-side-encryption-aws-kms", "x-amz-server-side-encryption-context")
            ):
                raise _not_implemented("server-side encryption with KMS keys (SSE-KMS)")
            if name.startswith("x-amz-grant-"):
                raise _not_implemented(f"ACL grants ({name})")
            if name.startswith("x-amz-object-lock-") or (
                name == "x-amz-bucket-object-lock-enabled" and value.strip().lower() == "true"
            ):
                raise _not_implemented("Object Lock, retention and legal hold")
            if name.startswith("x-amz-checksum-"):
                algorithm = name.removeprefix("x-amz-checksum-")
                if algorithm in UNSUPPORTED_CHECKSUMS:
                    raise _not_implemented(f"the {algorithm} checksum algorithm")
            if name in (
                "x-amz-website-redirect-location",
                "x-amz-write-offset-bytes",
                "x-amz-if-match-last-modified-time",
                "x-amz-if-match-size",
                "x-amz-object-ownership-transfer",
            ):
                raise _not_implemented(name)
        for name in ("x-amz-checksum-algorithm", "x-amz-sdk-checksum-algorithm"):
            value = headers.get(name, "").strip().lower()
            if value in UNSUPPORTED_CHECKSUMS:
                raise _not_implemented(f"the {value} checksum algorithm")
        encryption = headers.get("x-amz-server-side-encryption")
        if encryption is not None:
            if encryption.startswith("aws:kms"):
                raise _not_implemented("server-side encryption with KMS keys (SSE-KMS)")
            if encryption != "AES256":
                raise _invalid_argument(
                    "The encryption method specified is not supported",
                    "x-amz-server-side-encryption",
                    encryption,
                )
        if headers.get("x-amz-server-side-encryption-bucket-key-enabled", "").lower() == "true":
            raise _not_implemented("S3 Bucket Keys (SSE-KMS)")
        acl = headers.get("x-amz-acl")
        if acl is not None and acl != "private":
            raise _not_implemented(f"the canned ACL {acl!r} (only private is offered)")
        storage_class = headers.get("x-amz-storage-class")
        if storage_class is not None and storage_class != "STANDARD":
            raise _not_implemented(f"the storage class {storage_class!r} (only STANDARD)")
        for name in ("x-amz-expected-bucket-owner", "x-amz-source-expected-bucket-owner"):
            owner = headers.get(name)
            if owner is not None and owner != self.account_id:
                raise S3Error("Access Denied", code="AccessDenied", status=403)
        version_id = query.get("versionId")
        if version_id is not None and version_id != "null":
            raise _invalid_argument("Invalid version id specified", "versionId", version_id)

    async def _bucket_operation(self, request: Request, method: str, bucket: str) -> Response:
        query = request.query
        if "cors" in query:
            return await self._bucket_cors(request, method, bucket)
        if "versioning" in query:
            return await self._bucket_versioning(request, method, bucket)
        if "acl" in query:
            return await self._acl(request, method, bucket, None)
        if "tagging" in query:
            raise _not_implemented("?tagging on a bucket (bucket tags)")
        if method == "GET":
            if "location" in query:
                return await self.get_bucket_location(request, bucket)
            if "uploads" in query:
                return await self.list_multipart_uploads(request, bucket)
            if "versions" in query:
                return await self.list_object_versions(request, bucket)
            if query.get("list-type") == "2":
                return await self.list_objects_v2(request, bucket)
            return await self.list_objects_v1(request, bucket)
        if method == "PUT":
            return await self.create_bucket(request, bucket)
        if method == "HEAD":
            await self.store.head_bucket(bucket)
            return Response(
                200,
                [("x-amz-bucket-region", self.region), ("content-type", "application/xml")],
            )
        if method == "DELETE":
            await self.store.delete_bucket(bucket)
            return Response(204)
        if method == "POST" and "delete" in query:
            return await self.delete_objects(request, bucket)
        if method == "POST" and _is_form_upload(request):
            raise _not_implemented("POST Object (browser-based uploads with an HTML form)")
        raise _method_not_allowed(method, "BUCKET")

    async def _object_operation(
        self, request: Request, method: str, bucket: str, key: str
    ) -> Response:
        query = request.query
        check_key(key)
        if "tagging" in query:
            return await self._object_tagging(request, method, bucket, key)
        if "acl" in query:
            return await self._acl(request, method, bucket, key)
        if "attributes" in query:
            if method != "GET":
                raise _method_not_allowed(method, "OBJECT")
            return await self.get_object_attributes(request, bucket, key)
        if method == "GET":
            if "uploadId" in query:
                return await self.list_parts(request, bucket, key)
            return await self.get_object(request, bucket, key, head=False)
        if method == "HEAD":
            return await self.get_object(request, bucket, key, head=True)
        if method == "PUT":
            if "uploadId" in query or "partNumber" in query:
                if "x-amz-copy-source" in request.headers:
                    return await self.upload_part_copy(request, bucket, key)
                return await self.upload_part(request, bucket, key)
            if "x-amz-copy-source" in request.headers:
                return await self.copy_object(request, bucket, key)
            return await self.put_object(request, bucket, key)
        if method == "DELETE":
            if "uploadId" in query:
                await self.store.abort_multipart_upload(bucket, key, query["uploadId"])
                return Response(204)
            if_match = request.headers.get("if-match")
            await self.store.delete_object(
                bucket, key, WriteCondition(if_match=if_match) if if_match is not None else None
            )
            return Response(204)
        if method == "POST":
            if "uploads" in query:
                return await self.create_multipart_upload(request, bucket, key)
            if "uploadId" in query:
                return await self.complete_multipart_upload(request, bucket, key)
        raise _method_not_allowed(method, "OBJECT")

    async def _small_body(self, request: Request, *, whole_object_checksum: bool = False) -> bytes:
        """A small (XML) request body, verified like any payload. With
        ``whole_object_checksum`` (CompleteMultipartUpload) the x-amz-checksum-* headers
        are the object's checksum, not the body's."""
        headers = request.headers
        if whole_object_checksum:
            headers = {k: v for k, v in headers.items() if not k.startswith("x-amz-checksum-")}
        body = upload_body(headers, request.stream(), request.auth, max_length=MAX_XML_BODY)
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

    # ---------------------------------------------------------------- CORS
    async def _cors_for(self, request: Request) -> list[tuple[str, str]]:
        """Access-Control-* headers for a request from a browser page elsewhere (its
        Origin header), when a rule of the bucket allows it."""
        bucket, _ = _bucket_and_key(request, strict=False)
        if not bucket:
            return []
        try:
            rules = await self.store.get_bucket_cors(bucket)
        except ServiceError:
            return []
        method = request.method
        found = s3_cors.matching_rule(rules, request.headers["origin"], method, [])
        if found is None:
            return []
        rule, pattern = found
        return s3_cors.cors_headers(rule, request.headers["origin"], pattern)

    async def _preflight(self, request: Request, bucket: str, key: str) -> Response:
        headers = request.headers
        resource_type = "OBJECT" if key else "BUCKET"
        origin = headers.get("origin")
        method = headers.get("access-control-request-method")
        if not origin:
            raise S3Error(
                "Insufficient information. Origin request header needed.",
                code="BadRequest",
                status=400,
            )
        if not method or method not in s3_cors.CORS_METHODS:
            raise S3Error(
                f"Invalid Access-Control-Request-Method: {method or 'null'}",
                code="BadRequest",
                status=400,
            )
        if not bucket:
            raise s3_cors.forbidden(method, resource_type, s3_cors.NOT_ENABLED)
        try:
            rules = await self.store.get_bucket_cors(bucket)
        except S3Error as exc:
            if exc.code not in ("NoSuchCORSConfiguration", "NoSuchBucket"):
                raise
            raise s3_cors.forbidden(method, resource_type, s3_cors.NOT_ENABLED) from None
        wanted = s3_cors.requested_headers(headers.get("access-control-request-headers"))
        found = s3_cors.matching_rule(rules, origin, method, wanted)
        if found is None:
            raise s3_cors.forbidden(method, resource_type, s3_cors.NOT_ALLOWED)
        rule, pattern = found
        return Response(200, s3_cors.cors_headers(rule, origin, pattern, preflight_headers=wanted))

    async def _bucket_cors(self, request: Request, method: str, bucket: str) -> Response:
        if method == "GET":
            rules = await self.store.get_bucket_cors(bucket)
            body = _xml("CORSConfiguration", s3_cors.render_cors_configuration(rules))
            return _xml_response(body)
        if method == "PUT":
            await self.store.head_bucket(bucket)
            rules = s3_cors.parse_cors_configuration(_parse_xml(await self._small_body(request)))
            await self.store.put_bucket_cors(bucket, rules)
            return Response(200)
        if method == "DELETE":
            await self.store.delete_bucket_cors(bucket)
            return Response(204)
        raise _method_not_allowed(method, "BUCKET")

    # ---------------------------------------------------------------- versioning, ACLs
    async def _bucket_versioning(self, request: Request, method: str, bucket: str) -> Response:
        if method == "GET":
            await self.store.head_bucket(bucket)
            # Never enabled: an empty configuration, as S3 answers for such a bucket.
            return _xml_response(_xml("VersioningConfiguration", ""))
        if method == "PUT":
            await self.store.head_bucket(bucket)
            root = _parse_xml(await self._small_body(request))
            if root.tag != "VersioningConfiguration":
                raise _malformed_xml()
            status = (root.findtext("Status") or "").strip()
            mfa_delete = (root.findtext("MfaDelete") or "").strip()
            if status not in ("", "Enabled", "Suspended") or mfa_delete not in (
                "",
                "Enabled",
                "Disabled",
            ):
                raise _malformed_xml()
            if status or mfa_delete == "Enabled":
                raise _not_implemented("bucket versioning")
            return Response(200)
        raise _method_not_allowed(method, "BUCKET")

    async def _acl(self, request: Request, method: str, bucket: str, key: str | None) -> Response:
        """Only the canned ``private`` ACL exists: it can be read, and set again."""
        if key is None:
            await self.store.head_bucket(bucket)
        else:
            await self.store.head_object(bucket, key)
        if method == "GET":
            grant = (
                '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'xsi:type="CanonicalUser">'
                f"{_el('ID', OWNER_ID)}{_el('DisplayName', OWNER_NAME)}</Grantee>"
                "<Permission>FULL_CONTROL</Permission></Grant>"
            )
            return _xml_response(
                _xml(
                    "AccessControlPolicy",
                    f"{_owner()}<AccessControlList>{grant}</AccessControlList>",
                )
            )
        if method == "PUT":
            body = await self._small_body(request)
            if body.strip():
                root = _parse_xml(body)
                grants = root.findall("AccessControlList/Grant")
                if root.tag != "AccessControlPolicy":
                    raise _malformed_xml()
                only_owner = len(grants) == 1 and (
                    (grants[0].findtext("Permission") or "").strip() == "FULL_CONTROL"
                    and (grants[0].findtext("Grantee/ID") or "").strip() == OWNER_ID
                )
                if not only_owner:
                    raise _not_implemented("ACL grants other than the canned private ACL")
            return Response(200)
        raise _method_not_allowed(method, "OBJECT" if key else "BUCKET")

    # ---------------------------------------------------------------- buckets
    async def list_buckets(self, request: Request) -> Response:
        query = request.query
        max_buckets = _natural(query.get("max-buckets"), "max-buckets", 1, 10000)
        token = query.get("continuation-token")
        prefix = query.get("prefix")
        region = query.get("bucket-region")
        buckets = await self.store.list_buckets()
        if prefix:
            buckets = [b for b in buckets if b.name.startswith(prefix)]
        if region is not None and region != self.region:
            buckets = []
        if token:
            after = _decode_token(token)
            buckets = [b for b in buckets if b.name > after]
        next_token = None
        if max_buckets is not None and len(buckets) > max_buckets:
            buckets = buckets[:max_buckets]
            next_token = _encode_token(buckets[-1].name)
        items = "".join(
            f"<Bucket>{_el('Name', b.name)}{_el('CreationDate', iso8601(b.created))}"
            f"{_el('BucketRegion', self.region)}</Bucket>"
            for b in buckets
        )
        inner = f"<Buckets>{items}</Buckets>{_owner()}"
        if next_token:
            inner += _el("ContinuationToken", next_token)
        if prefix is not None:
            inner += _el("Prefix", prefix)
        return _xml_response(_xml("ListAllMyBucketsResult", inner))

    async def create_bucket(self, request: Request, bucket: str) -> Response:
        check_bucket_name(bucket)
        body = await self._small_body(request)
        if body.strip():
            root = _parse_xml(body)
            constraint = (root.findtext("LocationConstraint") or "").strip()
            if root.tag != "CreateBucketConfiguration":
                raise _malformed_xml()
            if (constraint and constraint != self.region) or (
                constraint == "us-east-1" and self.region == "us-east-1"
            ):
                raise S3Error(
                    f"The {constraint} location constraint is incompatible for the region "
                    "specific endpoint this request was sent to.",
                    code="IllegalLocationConstraintException"
                    if constraint != "us-east-1"
                    else "InvalidLocationConstraint",
                    status=400,
                )
        try:
            await self.store.create_bucket(bucket)
        except S3Error as exc:
            # S3 in us-east-1 answers 200 to creating a bucket one already owns (tools
            # that "ensure" a bucket rely on it); other regions answer 409.
            if exc.code != "BucketAlreadyOwnedByYou" or self.region != "us-east-1":
                raise
        return Response(200, [("location", f"/{bucket}")])

    async def get_bucket_location(self, request: Request, bucket: str) -> Response:
        await self.store.head_bucket(bucket)
        value = "" if self.region == "us-east-1" else escape(self.region)
        return _xml_response(_xml("LocationConstraint", value))

    async def list_objects_v2(self, request: Request, bucket: str) -> Response:
        query = request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        start_after = query.get("start-after", "")
        token = query.get("continuation-token")
        url_encode = _encoding_type(query)
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
            _contents(page.objects, enc, owner=query.get("fetch-owner") == "true"),
            _common_prefixes(page.common_prefixes, enc),
            f"<KeyCount>{len(page.objects) + len(page.common_prefixes)}</KeyCount>",
            # An empty token given is echoed too (S3 does; clients compare it).
            _el("ContinuationToken", token) if token is not None else "",
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
        url_encode = _encoding_type(query)
        max_keys = _int_param(query, "max-keys", 1000, 1000)
        page = await self.store.list_objects(
            bucket, prefix=prefix, delimiter=delimiter, start_after=marker, max_keys=max_keys
        )
        enc = _encoder(url_encode)
        last = None
        if page.truncated:
            candidates = [o.key for o in page.objects] + page.common_prefixes
            last = max(candidates) if candidates else None
        # S3 encodes Marker, NextMarker, Delimiter, keys and common prefixes when asked,
        # never the Prefix of a version 1 listing.
        parts = [
            _el("Name", bucket),
            _el("Prefix", prefix),
            f"<Marker>{enc(marker)}</Marker>",
            f"<NextMarker>{enc(last)}</NextMarker>" if last and delimiter else "",
            f"<MaxKeys>{max_keys}</MaxKeys>",
            f"<Delimiter>{enc(delimiter)}</Delimiter>" if delimiter else "",
            f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>",
            _contents(page.objects, enc, owner=True),
            _common_prefixes(page.common_prefixes, enc),
            "<EncodingType>url</EncodingType>" if url_encode else "",
        ]
        return _xml_response(_xml("ListBucketResult", "".join(parts)))

    async def list_object_versions(self, request: Request, bucket: str) -> Response:
        """ListObjectVersions of a bucket that was never versioned: each object is its
        one version, ``null``."""
        query = request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        key_marker = query.get("key-marker", "")
        version_marker = query.get("version-id-marker", "")
        url_encode = _encoding_type(query)
        max_keys = _int_param(query, "max-keys", 1000, 1000)
        if version_marker and not key_marker:
            raise _invalid_argument(
                "A version-id marker cannot be specified without a key marker.",
                "version-id-marker",
                version_marker,
            )
        if version_marker not in ("", "null"):
            raise _invalid_argument(
                "Invalid version id specified", "version-id-marker", version_marker
            )
        page = await self.store.list_objects(
            bucket, prefix=prefix, delimiter=delimiter, start_after=key_marker, max_keys=max_keys
        )
        enc = _encoder(url_encode)
        versions = "".join(
            "<Version>"
            f"<Key>{enc(o.key)}</Key>"
            + _el("VersionId", "null")
            + _el("IsLatest", "true")
            + _el("LastModified", iso8601(o.last_modified))
            + _el("ETag", f'"{o.etag}"')
            + _el("Size", o.size)
            + _owner()
            + _el("StorageClass", "STANDARD")
            + "</Version>"
            for o in page.objects
        )
        next_marker = ""
        if page.truncated:
            candidates = [o.key for o in page.objects] + page.common_prefixes
            if candidates:
                next_marker = (
                    f"<NextKeyMarker>{enc(max(candidates))}</NextKeyMarker>"
                    "<NextVersionIdMarker>null</NextVersionIdMarker>"
                )
        parts = [
            _el("Name", bucket),
            f"<Prefix>{enc(prefix)}</Prefix>",
            f"<KeyMarker>{enc(key_marker)}</KeyMarker>",
            _el("VersionIdMarker", version_marker),
            next_marker,
            f"<MaxKeys>{max_keys}</MaxKeys>",
            f"<Delimiter>{enc(delimiter)}</Delimiter>" if delimiter else "",
            f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>",
            versions,
            _common_prefixes(page.common_prefixes, enc),
            "<EncodingType>url</EncodingType>" if url_encode else "",
        ]
        return _xml_response(_xml("ListVersionsResult", "".join(parts)))

    async def delete_objects(self, request: Request, bucket: str) -> Response:
        root = _parse_xml(await self._small_body(request))
        if root.tag != "Delete":
            raise _malformed_xml()
        quiet = (root.findtext("Quiet") or "").strip().lower() == "true"
        entries = [
            (o.findtext("Key") or "", o.findtext("VersionId"), o.findtext("ETag"))
            for o in root.findall("Object")
        ]
        if not entries or len(entries) > 1000:
            raise _malformed_xml()
        await self.store.head_bucket(bucket)
        results: list[str] = []
        for key, version_id, etag in entries:
            version = _el("VersionId", version_id) if version_id is not None else ""
            try:
                check_key(key)
                request.authorize("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{key}")
                if version_id is not None and version_id != "null":
                    raise S3Error("Invalid version id specified", code="NoSuchVersion", status=404)
                condition = WriteCondition(if_match=etag.strip()) if etag else None
                await self.store.delete_object(bucket, key, condition)
            except (S3Error, AccessDenied) as exc:
                results.append(
                    f"<Error>{_el('Key', key)}{version}{_el('Code', exc.code)}"
                    f"{_el('Message', exc.message)}</Error>"
                )
                continue
            if not quiet:
                results.append(f"<Deleted>{_el('Key', key)}{version}</Deleted>")
        return _xml_response(_xml("DeleteResult", "".join(results)))

    # ---------------------------------------------------------------- objects
    async def put_object(self, request: Request, bucket: str, key: str) -> Response:
        headers = request.headers
        await self.store.head_bucket(bucket)  # NoSuchBucket before reading any body
        tags = _tagging_header(headers)
        body = upload_body(headers, request.stream(), request.auth, max_length=MAX_SINGLE_PUT)
        content_type, metadata, stored = _object_attributes(headers)
        info = await self.store.put_object(
            bucket,
            key,
            body.stream,
            content_type=content_type,
            metadata=metadata,
            headers=stored,
            checksum_algorithm=body.checksum_algorithm,
            tags=tags,
            encryption=headers.get("x-amz-server-side-encryption"),
            condition=_write_condition(headers),
        )
        return Response(
            200,
            [("etag", f'"{info.etag}"'), *_checksum_headers(info), *_encryption_headers(info)],
        )

    async def get_object(self, request: Request, bucket: str, key: str, *, head: bool) -> Response:
        headers = request.headers
        query = request.query
        part_number = _natural(query.get("partNumber"), "partNumber", 1, MAX_PART_NUMBER)
        if part_number is not None and "range" in headers:
            raise _invalid_request(
                "Cannot specify both Range header and partNumber query parameter"
            )
        overrides = _response_overrides(query)
        info = await self.store.head_object(bucket, key)
        not_modified = _check_preconditions(headers, info)
        if not_modified:
            return Response(
                304, [("etag", f'"{info.etag}"'), ("last-modified", http_date(info.last_modified))]
            )
        byte_range = None
        status = 200
        response_headers = _object_headers(info)
        part: PartInfo | None = None
        if part_number is not None:
            parts = await self.store.object_parts(bucket, key)
            if parts is None:
                if part_number != 1:
                    raise _invalid_part_number()
            else:
                if part_number > len(parts):
                    raise _invalid_part_number()
                part = parts[part_number - 1]
                first = sum(p.size for p in parts[: part_number - 1])
                byte_range = (first, first + part.size - 1)
                response_headers.append(("x-amz-mp-parts-count", str(len(parts))))
        elif "range" in headers:
            try:
                byte_range = _parse_range(headers["range"], info.size)
            except S3Error as exc:
                exc.extra["RangeRequested"] = headers["range"]
                raise
        checksum_mode = headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"
        if byte_range is not None and byte_range[1] >= byte_range[0]:
            status = 206
            first, last = byte_range
            response_headers.append(("content-range", f"bytes {first}-{last}/{info.size}"))
            length = last - first + 1
            if checksum_mode and part is not None and part.checksum and part.checksum_algorithm:
                response_headers.append(
                    (f"x-amz-checksum-{part.checksum_algorithm.lower()}", part.checksum)
                )
                response_headers.append(("x-amz-checksum-type", "COMPOSITE"))
        else:
            byte_range = None if byte_range is None else byte_range
            length = info.size if byte_range is None else 0
            if checksum_mode:
                response_headers.extend(_checksum_headers(info))
        for header, value in overrides:
            response_headers = [(k, v) for k, v in response_headers if k != header]
            response_headers.append((header, value))
        response_headers.append(("content-length", str(length)))
        if info.tag_count:
            response_headers.append(("x-amz-tagging-count", str(info.tag_count)))
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
        if stored.tag_count and not info.tag_count:
            response_headers.append(("x-amz-tagging-count", str(stored.tag_count)))
        return Response(status, response_headers, stream)

    async def get_object_attributes(self, request: Request, bucket: str, key: str) -> Response:
        headers = request.headers
        wanted = [a.strip() for a in headers.get("x-amz-object-attributes", "").split(",")]
        wanted = [a for a in wanted if a]
        if not wanted:
            raise _invalid_request(
                "The x-amz-object-attributes header specifying the attributes to be "
                "retrieved is either missing or empty"
            )
        for name in wanted:
            if name not in OBJECT_ATTRIBUTES:
                raise _invalid_argument(
                    "Invalid attribute name specified.", "x-amz-object-attributes", name
                )
        max_parts = _natural(headers.get("x-amz-max-parts"), "x-amz-max-parts", 0, 1000)
        marker = _natural(
            headers.get("x-amz-part-number-marker"), "x-amz-part-number-marker", 0, MAX_PART_NUMBER
        )
        info = await self.store.head_object(bucket, key)
        inner: list[str] = []
        if "ETag" in wanted:
            inner.append(_el("ETag", info.etag))
        if "Checksum" in wanted and info.checksums:
            algorithm, value = next(iter(info.checksums.items()))
            kind = "COMPOSITE" if "-" in value else "FULL_OBJECT"
            inner.append(
                f"<Checksum>{_el('Checksum' + algorithm, value)}"
                f"{_el('ChecksumType', kind)}</Checksum>"
            )
        if "ObjectParts" in wanted:
            parts = await self.store.object_parts(bucket, key)
            if parts is not None:
                limit = 1000 if max_parts is None else max_parts
                after = marker or 0
                remaining = [p for p in parts if p.part_number > after]
                page = remaining[:limit]
                truncated = len(remaining) > limit
                items = "".join(
                    "<Part>"
                    + _el("PartNumber", p.part_number)
                    + _el("Size", p.size)
                    + (
                        _el(f"Checksum{p.checksum_algorithm}", p.checksum)
                        if p.checksum and p.checksum_algorithm
                        else ""
                    )
                    + "</Part>"
                    for p in page
                )
                inner.append(
                    "<ObjectParts>"
                    + _el("PartsCount", len(parts))
                    + _el("PartNumberMarker", after)
                    + (_el("NextPartNumberMarker", page[-1].part_number) if page else "")
                    + _el("MaxParts", limit)
                    + _el("IsTruncated", "true" if truncated else "false")
                    + items
                    + "</ObjectParts>"
                )
        if "StorageClass" in wanted:
            inner.append(_el("StorageClass", "STANDARD"))
        if "ObjectSize" in wanted:
            inner.append(_el("ObjectSize", info.size))
        return _xml_response(
            _xml("GetObjectAttributesResponse", "".join(inner)),
            headers=[("last-modified", http_date(info.last_modified))],
        )

    async def _object_tagging(
        self, request: Request, method: str, bucket: str, key: str
    ) -> Response:
        if method == "GET":
            tags = await self.store.get_object_tagging(bucket, key)
            items = "".join(  # S3 lists a tag set in key order
                f"<Tag>{_el('Key', k)}{_el('Value', v)}</Tag>" for k, v in sorted(tags.items())
            )
            return _xml_response(_xml("Tagging", f"<TagSet>{items}</TagSet>"))
        if method == "PUT":
            root = _parse_xml(await self._small_body(request))
            if root.tag != "Tagging" or root.find("TagSet") is None:
                raise _malformed_xml()
            pairs = []
            for tag in root.findall("TagSet/Tag"):
                tag_key, tag_value = tag.findtext("Key"), tag.findtext("Value")
                if tag_key is None or tag_value is None:
                    raise _malformed_xml()
                pairs.append((tag_key, tag_value))
            await self.store.put_object_tagging(bucket, key, validate_tags(pairs))
            return Response(200)
        if method == "DELETE":
            await self.store.delete_object_tagging(bucket, key)
            return Response(204)
        raise _method_not_allowed(method, "OBJECT")

    async def copy_object(self, request: Request, bucket: str, key: str) -> Response:
        headers = request.headers
        source_bucket, source_key = _copy_source(headers["x-amz-copy-source"])
        directive = headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise _invalid_argument(
                "Unknown metadata directive.", "x-amz-metadata-directive", directive
            )
        tagging_directive = headers.get("x-amz-tagging-directive", "COPY").upper()
        if tagging_directive not in ("COPY", "REPLACE"):
            raise _invalid_argument(
                "Unknown tagging directive.", "x-amz-tagging-directive", tagging_directive
            )
        replace = directive == "REPLACE"
        encryption = headers.get("x-amz-server-side-encryption")
        if (source_bucket, source_key) == (bucket, key) and not replace and encryption is None:
            raise S3Error(
                "This copy request is illegal because it is trying to copy an object to itself "
                "without changing the object's metadata, storage class, website redirect "
                "location or encryption attributes.",
                code="InvalidRequest",
                status=400,
            )
        tags = _tagging_header(headers) if tagging_directive == "REPLACE" else None
        source = await self.store.head_object(source_bucket, source_key)
        _check_copy_preconditions(headers, source)
        content_type, metadata, stored = _object_attributes(headers)
        info = await self.store.copy_object(
            source_bucket,
            source_key,
            bucket,
            key,
            replace_metadata=replace,
            content_type=content_type,
            metadata=metadata,
            headers=stored,
            tags=tags if tags is not None else ({} if tagging_directive == "REPLACE" else None),
            encryption=encryption,
            condition=_write_condition(headers),
        )
        checksum_xml = "".join(
            _el(f"Checksum{a}", v) for a, v in info.checksums.items() if "-" not in v
        )
        body = _xml(
            "CopyObjectResult",
            _el("LastModified", iso8601(info.last_modified))
            + _el("ETag", f'"{info.etag}"')
            + checksum_xml,
        )
        return _xml_response(body, headers=_encryption_headers(info))

    # ---------------------------------------------------------------- multipart
    async def create_multipart_upload(self, request: Request, bucket: str, key: str) -> Response:
        headers = request.headers
        content_type, metadata, stored = _object_attributes(headers)
        algorithm = headers.get("x-amz-checksum-algorithm")
        upload = await self.store.create_multipart_upload(
            bucket,
            key,
            content_type=content_type,
            metadata=metadata,
            headers=stored,
            checksum_algorithm=algorithm.upper() if algorithm else None,
            checksum_type=headers.get("x-amz-checksum-type"),
            tags=_tagging_header(headers),
            encryption=headers.get("x-amz-server-side-encryption"),
        )
        extra: list[tuple[str, str]] = []
        if upload.checksum_algorithm:
            extra.append(("x-amz-checksum-algorithm", upload.checksum_algorithm))
        if upload.checksum_type:
            extra.append(("x-amz-checksum-type", upload.checksum_type))
        if upload.encryption:
            extra.append(("x-amz-server-side-encryption", upload.encryption))
        body = _xml(
            "InitiateMultipartUploadResult",
            _el("Bucket", bucket) + _el("Key", key) + _el("UploadId", upload.upload_id),
        )
        return _xml_response(body, headers=extra)

    def _part_target(self, request: Request) -> tuple[str, int]:
        query = request.query
        upload_id = query.get("uploadId")
        if upload_id is None:
            raise _invalid_request("partNumber requires uploadId")
        raw = query.get("partNumber", "")
        number = _natural(raw, "partNumber", 1, MAX_PART_NUMBER)
        assert number is not None
        return upload_id, number

    async def upload_part(self, request: Request, bucket: str, key: str) -> Response:
        upload_id, part_number = self._part_target(request)
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
        if part.checksum_algorithm and part.checksum and body.checksum_algorithm:
            headers.append((f"x-amz-checksum-{part.checksum_algorithm.lower()}", part.checksum))
        return Response(200, headers)

    async def upload_part_copy(self, request: Request, bucket: str, key: str) -> Response:
        """UploadPartCopy: a part made of (a range of) an existing object."""
        headers = request.headers
        upload_id, part_number = self._part_target(request)
        source_bucket, source_key = _copy_source(headers["x-amz-copy-source"])
        await self.store.list_parts(bucket, key, upload_id)  # NoSuchUpload first
        source = await self.store.head_object(source_bucket, source_key)
        _check_copy_preconditions(headers, source)
        byte_range: tuple[int, int] | None = None
        range_header = headers.get("x-amz-copy-source-range")
        if range_header is not None:
            byte_range = _copy_source_range(range_header, source.size)
        if byte_range is None and source.size == 0:
            stream: AsyncIterator[bytes] = _empty()
        else:
            stored, stream = await self.store.get_object(source_bucket, source_key, byte_range)
            if stored.etag != source.etag:
                await _close(stream)
                raise S3Error(
                    "The source object changed while it was being copied; retry.",
                    code="InternalError",
                    status=500,
                )
        part = await self.store.upload_part(bucket, key, upload_id, part_number, stream)
        checksum_xml = (
            _el(f"Checksum{part.checksum_algorithm}", part.checksum)
            if part.checksum and part.checksum_algorithm
            else ""
        )
        body = _xml(
            "CopyPartResult",
            _el("LastModified", iso8601(part.last_modified))
            + _el("ETag", f'"{part.etag}"')
            + checksum_xml,
        )
        return _xml_response(body)

    async def complete_multipart_upload(self, request: Request, bucket: str, key: str) -> Response:
        headers = request.headers
        upload_id = request.query["uploadId"]
        root = _parse_xml(await self._small_body(request, whole_object_checksum=True))
        if root.tag != "CompleteMultipartUpload":
            raise _malformed_xml()
        parts: list[CompletedPart] = []
        for element in root.findall("Part"):
            number_text = (element.findtext("PartNumber") or "").strip()
            try:
                number = wire_int(number_text)
            except ValueError:
                raise _malformed_xml() from None
            checksums = {
                algorithm: (element.findtext(f"Checksum{algorithm}") or "").strip()
                for algorithm in CHECKSUM_ALGORITHMS
                if element.find(f"Checksum{algorithm}") is not None
            }
            etag = (element.findtext("ETag") or "").strip().strip('"')
            parts.append(CompletedPart(number, etag, checksums))
        checksum = next(
            (
                (algorithm, headers[f"x-amz-checksum-{algorithm.lower()}"])
                for algorithm in CHECKSUM_ALGORITHMS
                if f"x-amz-checksum-{algorithm.lower()}" in headers
            ),
            None,
        )
        object_size = _natural(
            headers.get("x-amz-mp-object-size"), "x-amz-mp-object-size", 0, 2**63 - 1
        )
        info = await self.store.complete_multipart_upload(
            bucket,
            key,
            upload_id,
            parts,
            checksum=checksum,
            checksum_type=headers.get("x-amz-checksum-type"),
            object_size=object_size,
            condition=_write_condition(headers),
        )
        host = headers.get("host", "localhost")
        location = f"http://{host}/{quote(bucket)}/{quote(key)}"
        checksum_xml = "".join(
            _el(f"Checksum{algorithm}", value)
            + _el("ChecksumType", "COMPOSITE" if "-" in value else "FULL_OBJECT")
            for algorithm, value in info.checksums.items()
        )
        body = _xml(
            "CompleteMultipartUploadResult",
            _el("Location", location)
            + _el("Bucket", bucket)
            + _el("Key", key)
            + _el("ETag", f'"{info.etag}"')
            + checksum_xml,
        )
        return _xml_response(body, headers=_encryption_headers(info))

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
            + (
                _el(f"Checksum{p.checksum_algorithm}", p.checksum)
                if p.checksum and p.checksum_algorithm
                else ""
            )
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
            + (_el("ChecksumAlgorithm", u.checksum_algorithm) if u.checksum_algorithm else "")
            + (_el("ChecksumType", u.checksum_type) if u.checksum_type else "")
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


def _bucket_and_key(request: Request, *, strict: bool = True) -> tuple[str, str]:
    try:
        path = unquote(request.raw_path, errors="strict")
    except UnicodeDecodeError:
        if not strict:
            return "", ""
        raise S3Error("Couldn't parse the specified URI.", code="InvalidURI", status=400) from None
    bucket, _slash, key = path.removeprefix("/").partition("/")
    return bucket, key


def _carries_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


def _is_form_upload(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def _encoding_type(query: dict[str, str]) -> bool:
    value = query.get("encoding-type")
    if value is None:
        return False
    if value.lower() != "url":
        raise _invalid_argument(
            "Invalid Encoding Method specified in Request", "encoding-type", value
        )
    return True


def _encoder(url_encode: bool) -> Callable[[str], str]:
    if url_encode:
        return lambda value: quote(value, safe="/")
    return escape


def _contents(objects: list[ObjectInfo], enc: Callable[[str], str], *, owner: bool) -> str:
    owner_xml = _owner() if owner else ""
    return "".join(
        "<Contents>"
        f"<Key>{enc(o.key)}</Key>"
        + _el("LastModified", iso8601(o.last_modified))
        + _el("ETag", f'"{o.etag}"')
        + _el("Size", o.size)
        + owner_xml
        + _el("StorageClass", "STANDARD")
        + "</Contents>"
        for o in objects
    )


def _common_prefixes(prefixes: list[str], enc: Callable[[str], str]) -> str:
    return "".join(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in prefixes)


def _decode_metadata(value: str) -> str:
    """A metadata value as sent: RFC 2047 encoded words are decoded (S3 stores the text
    they stand for), anything else is kept."""
    if "=?" not in value:
        return value
    try:
        pieces = email.header.decode_header(value)
        return "".join(
            piece.decode(charset or "ascii") if isinstance(piece, bytes) else piece
            for piece, charset in pieces
        )
    except (ValueError, LookupError, UnicodeDecodeError, email.errors.HeaderParseError):
        return value


def _encode_metadata(value: str) -> str:
    """S3 answers non-ASCII metadata RFC 2047-encoded (UTF-8, base64), mail-safe."""
    if value.isascii():
        return value
    raw = value.encode("utf-8", "surrogateescape")
    return f"=?UTF-8?B?{base64.b64encode(raw).decode()}?="


def _object_attributes(
    headers: dict[str, str],
) -> tuple[str | None, dict[str, str], dict[str, str]]:
    """Content-Type, user metadata (x-amz-meta-*) and other stored headers of a request."""
    metadata = {
        name.removeprefix("x-amz-meta-"): _decode_metadata(value)
        for name, value in headers.items()
        if name.startswith("x-amz-meta-")
    }
    stored: dict[str, str] = {}
    for name in STORED_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if name == "content-encoding":
            # aws-chunked is transport, not the object's; the rest is kept as sent.
            codings = value.split(",")
            if any(c.strip().lower() == "aws-chunked" for c in codings):
                value = ",".join(c for c in codings if c.strip().lower() != "aws-chunked").strip()
            if not value:
                continue
        stored[name] = value
    return headers.get("content-type"), metadata, stored


def _tagging_header(headers: dict[str, str]) -> dict[str, str] | None:
    """x-amz-tagging (a URL query string of key=value pairs) as a validated tag set."""
    raw = headers.get("x-amz-tagging")
    if raw is None:
        return None
    try:
        pairs = parse_qsl(raw, keep_blank_values=True)  # "k" alone is "k" = ""
    except ValueError:
        raise S3Error(
            "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query "
            "parameters without tag name duplicates.",
            code="InvalidArgument",
            status=400,
        ) from None
    return validate_tags(pairs)


def _write_condition(headers: dict[str, str]) -> WriteCondition | None:
    if_match = headers.get("if-match")
    if_none_match = headers.get("if-none-match")
    if if_match is None and if_none_match is None:
        return None
    return WriteCondition(if_match=if_match, if_none_match=if_none_match)


def _response_overrides(query: dict[str, str]) -> list[tuple[str, str]]:
    """response-* query overrides as headers; values that could split or corrupt the
    response head (CR, LF, other control characters) are refused."""
    overrides: list[tuple[str, str]] = []
    for param, header in RESPONSE_OVERRIDES.items():
        value = query.get(param)
        if value is None:
            continue
        if _CONTROL.search(value):
            raise _invalid_argument(
                f"Header value for {param} contains invalid characters", param, value
            )
        overrides.append((header, value))
    return overrides


def _object_headers(info: ObjectInfo) -> list[tuple[str, str]]:
    headers = [
        ("etag", f'"{info.etag}"'),
        ("last-modified", http_date(info.last_modified)),
        ("content-type", info.content_type or DEFAULT_CONTENT_TYPE),
        ("accept-ranges", "bytes"),
    ]
    headers.extend((name, value) for name, value in info.headers.items())
    headers.extend(
        (f"x-amz-meta-{name}", _encode_metadata(value)) for name, value in info.metadata.items()
    )
    headers.extend(_encryption_headers(info))
    return headers


def _encryption_headers(info: ObjectInfo) -> list[tuple[str, str]]:
    return [("x-amz-server-side-encryption", info.encryption)] if info.encryption else []


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
    if if_match is not None and not etag_matches(if_match, info.etag):
        raise precondition_failed("If-Match")
    if if_match is None and "if-unmodified-since" in headers:
        since = _parse_http_date(headers["if-unmodified-since"])
        if since is not None and modified > since:
            raise precondition_failed("If-Unmodified-Since")
    if if_none_match is not None and etag_matches(if_none_match, info.etag):
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
        raise precondition_failed("x-amz-copy-source-If-None-Match")


def _invalid_part_number() -> S3Error:
    # What ceph/s3-tests expects of S3 for a part number past the object's parts.
    return S3Error("The requested partnumber is not satisfiable", code="InvalidPart", status=400)


def _copy_source(header: str) -> tuple[str, str]:
    path, _, query = header.partition("?")
    source = unquote(path).removeprefix("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise _invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            "x-amz-copy-source",
            header,
        )
    version_id = dict(parse_qsl(query)).get("versionId")
    if version_id is not None and version_id != "null":
        raise _invalid_argument("Invalid version id specified", "x-amz-copy-source", header)
    return bucket, key


def _copy_source_range(header: str, size: int) -> tuple[int, int]:
    """x-amz-copy-source-range: exactly ``bytes=first-last`` within the source."""
    match = re.fullmatch(r"bytes=([0-9]+)-([0-9]+)", header.strip())
    if match is None or int(match.group(1)) > int(match.group(2)):
        raise _invalid_argument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where "
            "first and last are the zero-based offsets of the first and last bytes to copy",
            "x-amz-copy-source-range",
            header,
        )
    if int(match.group(2)) >= size:
        raise S3Error(
            f"Range specified is not valid for source object of size: {size}",
            code="InvalidRange",
            status=416,
            extra={"RangeRequested": header, "ActualObjectSize": str(size)},
        )
    return int(match.group(1)), int(match.group(2))


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""


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
