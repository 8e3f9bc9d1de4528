"""What a scoped key needs for an S3 request: the IAM actions and resource ARNs S3
checks for each operation (``s3:GetObject`` on ``arn:aws:s3:::bucket/key``,
``s3:ListBucket`` on ``arn:aws:s3:::bucket``...). DeleteObjects is checked per key by
the operation itself (``s3:DeleteObject``), as S3 does."""

from __future__ import annotations

from urllib.parse import unquote

from sagequeue.frontdoor.http import Request

# Routes that name no S3 operation: only a policy allowing every action lets them reach
# the handler, which answers MethodNotAllowed or NotImplemented.
_UNKNOWN = "s3:UnknownOperation"


def s3_permissions(request: Request) -> list[tuple[str, str]]:
    """(action, resource) pairs that must all be allowed for ``request``."""
    try:
        path = unquote(request.raw_path, errors="strict")
    except UnicodeDecodeError:
        return []  # the handler refuses the URI before it does anything
    bucket, _, key = path.removeprefix("/").partition("/")
    method = request.method
    query = request.query
    if not bucket:
        return [("s3:ListAllMyBuckets", "*")]
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if not key:
        if method in ("GET", "HEAD"):
            if "location" in query:
                return [("s3:GetBucketLocation", bucket_arn)]
            if "uploads" in query:
                return [("s3:ListBucketMultipartUploads", bucket_arn)]
            return [("s3:ListBucket", bucket_arn)]
        if method == "PUT":
            return [("s3:CreateBucket", bucket_arn)]
        if method == "DELETE":
            return [("s3:DeleteBucket", bucket_arn)]
        if method == "POST" and "delete" in query:
            return []  # s3:DeleteObject per key, in the operation
        return [(_UNKNOWN, bucket_arn)]
    object_arn = f"{bucket_arn}/{key}"
    if method == "GET":
        if "uploadId" in query:
            return [("s3:ListMultipartUploadParts", object_arn)]
        return [("s3:GetObject", object_arn)]
    if method == "HEAD":
        return [("s3:GetObject", object_arn)]
    if method == "PUT":
        needed = [("s3:PutObject", object_arn)]
        copy_source = request.headers.get("x-amz-copy-source")
        if copy_source is not None:
            source = unquote(copy_source.partition("?")[0]).removeprefix("/")
            needed.append(("s3:GetObject", f"arn:aws:s3:::{source}"))
        return needed
    if method == "DELETE":
        if "uploadId" in query:
            return [("s3:AbortMultipartUpload", object_arn)]
        return [("s3:DeleteObject", object_arn)]
    if method == "POST" and ("uploads" in query or "uploadId" in query):
        return [("s3:PutObject", object_arn)]
    return [(_UNKNOWN, object_arn)]
