"""The S3 API end to end: real boto3 and awscli against a real ``sagequeue serve``
(the conftest ``shared_server``, on the embedded defaults)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import io
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import REGION, ServerProcess
from sagequeue.frontdoor.sigv4 import EMPTY_SHA256, signing_key

MIB = 1024 * 1024
AWS = Path(sys.executable).parent / "aws"


@pytest.fixture(scope="module")
def server(shared_server: ServerProcess) -> ServerProcess:
    return shared_server


@pytest.fixture(scope="module")
def client(s3):
    return s3


@pytest.fixture
def bucket(client) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def error_of(call, *args, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def raw_request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    secret: str | None = None,
) -> tuple[int, bytes]:
    """A SigV4-signed request built by hand (for bodies boto3 does not send over http).
    ``x-amz-content-sha256`` is signed as given (the body's SHA-256 when absent)."""
    access, real_secret = server.credentials
    headers = {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), **(headers or {})}
    request = AWSRequest(method=method, url=server.url + path, data=body, headers=headers)
    # Plain SigV4 signs the x-amz-content-sha256 header as given (S3SigV4Auth would
    # replace it with the body's hash).
    SigV4Auth(Credentials(access, secret or real_secret), "s3", REGION).add_auth(request)
    prepared = request.prepare()
    http_request = urllib.request.Request(
        prepared.url, data=body or None, method=method, headers=dict(prepared.headers)
    )
    try:
        with urllib.request.urlopen(http_request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ------------------------------------------------------------------ buckets


def test_bucket_life_cycle(client) -> None:
    name = f"life-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in client.list_buckets()["Buckets"]]
    client.head_bucket(Bucket=name)
    client.delete_bucket(Bucket=name)
    assert error_of(client.head_bucket, Bucket=name) == ("404", 404)


def test_get_bucket_location_is_us_east_1(client, bucket: str) -> None:
    assert client.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None


def test_creating_an_owned_bucket_again_in_us_east_1_is_ok(client, bucket: str) -> None:
    # Tools that "ensure" a bucket rely on it (S3 answers 200 in us-east-1).
    response = client.create_bucket(Bucket=bucket)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_creating_an_owned_bucket_again_elsewhere_is_bucket_already_owned_by_you(
    server_factory, tmp_path: Path
) -> None:
    config = tmp_path / "eu.yaml"
    config.write_text("region: eu-west-1\n")
    other = server_factory("--config", str(config))
    client = boto3.client(
        "s3",
        endpoint_url=other.url,
        region_name="eu-west-1",
        aws_access_key_id=other.credentials[0],
        aws_secret_access_key=other.credentials[1],
        config=Config(retries={"max_attempts": 1}),
    )
    location = {"LocationConstraint": "eu-west-1"}
    client.create_bucket(Bucket="mine", CreateBucketConfiguration=location)
    assert error_of(client.create_bucket, Bucket="mine", CreateBucketConfiguration=location) == (
        "BucketAlreadyOwnedByYou",
        409,
    )


def test_invalid_bucket_name_is_refused(server: ServerProcess) -> None:
    status, body = raw_request(server, "PUT", "/Bad_Name")
    assert status == 400 and b"<Code>InvalidBucketName</Code>" in body


def test_delete_non_empty_bucket_is_bucket_not_empty(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert error_of(client.delete_bucket, Bucket=bucket) == ("BucketNotEmpty", 409)


def test_missing_bucket_is_no_such_bucket(client) -> None:
    assert error_of(client.list_objects_v2, Bucket="no-such-bucket-x") == ("NoSuchBucket", 404)
    assert error_of(client.put_object, Bucket="no-such-bucket-x", Key="k", Body=b"x") == (
        "NoSuchBucket",
        404,
    )


# ------------------------------------------------------------------ objects


@pytest.mark.parametrize("size", [0, 1, 100_000])
def test_object_round_trips(client, bucket: str, size: int) -> None:
    data = os.urandom(size)
    put = client.put_object(Bucket=bucket, Key="obj", Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = client.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size


def test_metadata_and_content_headers_are_kept(client, bucket: str) -> None:
    client.put_object(
        Bucket=bucket,
        Key="doc.json",
        Body=b"{}",
        ContentType="application/json",
        Metadata={"owner": "team-a", "run": "7"},
        ContentEncoding="identity",
        ContentDisposition="attachment; filename=doc.json",
        CacheControl="max-age=60",
    )
    head = client.head_object(Bucket=bucket, Key="doc.json")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"owner": "team-a", "run": "7"}
    assert head["ContentEncoding"] == "identity"
    assert head["ContentDisposition"] == "attachment; filename=doc.json"
    assert head["CacheControl"] == "max-age=60"


def test_missing_key_is_no_such_key(client, bucket: str) -> None:
    assert error_of(client.get_object, Bucket=bucket, Key="nope") == ("NoSuchKey", 404)
    assert error_of(client.head_object, Bucket=bucket, Key="nope") == ("404", 404)


def test_range_get_returns_partial_content(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    got = client.get_object(Bucket=bucket, Key="k", Range="bytes=2-5")
    assert got["Body"].read() == b"2345"
    assert got["ContentRange"] == "bytes 2-5/10"
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert client.get_object(Bucket=bucket, Key="k", Range="bytes=-3")["Body"].read() == b"789"
    assert client.get_object(Bucket=bucket, Key="k", Range="bytes=7-")["Body"].read() == b"789"


def test_unsatisfiable_range_is_invalid_range(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    assert error_of(client.get_object, Bucket=bucket, Key="k", Range="bytes=10-20") == (
        "InvalidRange",
        416,
    )


def test_if_match_mismatch_is_precondition_failed(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert error_of(client.get_object, Bucket=bucket, Key="k", IfMatch='"abc"') == (
        "PreconditionFailed",
        412,
    )


def test_if_none_match_on_current_etag_is_not_modified(client, bucket: str) -> None:
    etag = client.put_object(Bucket=bucket, Key="k", Body=b"x")["ETag"]
    assert error_of(client.get_object, Bucket=bucket, Key="k", IfNoneMatch=etag) == ("304", 304)


def test_if_modified_since_the_future_is_not_modified(client, bucket: str) -> None:
    import datetime

    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    assert error_of(client.get_object, Bucket=bucket, Key="k", IfModifiedSince=future) == (
        "304",
        304,
    )
    assert client.get_object(Bucket=bucket, Key="k", IfModifiedSince=past)["Body"].read() == b"x"
    assert error_of(client.get_object, Bucket=bucket, Key="k", IfUnmodifiedSince=past) == (
        "PreconditionFailed",
        412,
    )


def test_delete_object_then_delete_objects(client, bucket: str) -> None:
    for key in ("a", "b", "c"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    client.delete_object(Bucket=bucket, Key="a")
    result = client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "b"}, {"Key": "missing"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["b", "missing"]
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]


def test_copy_object_copies_metadata_or_replaces_it(client, bucket: str) -> None:
    client.put_object(
        Bucket=bucket, Key="src", Body=b"data", ContentType="text/csv", Metadata={"m": "1"}
    )
    copied = client.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"data").hexdigest()}"'
    head = client.head_object(Bucket=bucket, Key="dst")
    assert (head["ContentType"], head["Metadata"]) == ("text/csv", {"m": "1"})
    client.copy_object(
        Bucket=bucket,
        Key="dst2",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"n": "2"},
        ContentType="text/plain",
    )
    head = client.head_object(Bucket=bucket, Key="dst2")
    assert (head["ContentType"], head["Metadata"]) == ("text/plain", {"n": "2"})
    assert client.get_object(Bucket=bucket, Key="dst2")["Body"].read() == b"data"


def test_copy_onto_itself_without_replace_is_invalid_request(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert error_of(client.copy_object, Bucket=bucket, Key="k", CopySource=f"{bucket}/k") == (
        "InvalidRequest",
        400,
    )


def test_path_escape_keys_are_ordinary_keys(client, bucket: str) -> None:
    keys = ["../../etc/passwd", "/leading", "a/./b", "a//b", "%2e%2e/x", "é/ü", "k" * 1024]
    for index, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=str(index).encode())
    for index, key in enumerate(keys):
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == str(index).encode()
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())


def test_key_longer_than_1024_bytes_is_refused(client, bucket: str) -> None:
    assert error_of(client.put_object, Bucket=bucket, Key="k" * 1025, Body=b"x") == (
        "KeyTooLongError",
        400,
    )


# ------------------------------------------------------------------ listing


def test_list_objects_v2_paginates_with_prefixes(client, bucket: str) -> None:
    keys = [f"dir{d}/file{f:02d}" for d in range(3) for f in range(4)] + ["top1", "top2"]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b".")
    paginator = client.get_paginator("list_objects_v2")
    pages = list(paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 5}))
    assert len(pages) == 3
    assert [o["Key"] for p in pages for o in p["Contents"]] == sorted(keys)
    assert [p["KeyCount"] for p in pages] == [5, 5, 4]
    top = client.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir0/", "dir1/", "dir2/"]
    assert [o["Key"] for o in top["Contents"]] == ["top1", "top2"]
    inner = client.list_objects_v2(Bucket=bucket, Prefix="dir1/", StartAfter="dir1/file01")
    assert [o["Key"] for o in inner["Contents"]] == ["dir1/file02", "dir1/file03"]


def test_list_objects_v1_paginates_with_markers(client, bucket: str) -> None:
    keys = [f"k{i:02d}" for i in range(7)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b".")
    paginator = client.get_paginator("list_objects")
    pages = list(paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 3}))
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys


def test_url_encoded_listing_round_trips_odd_keys(client, bucket: str) -> None:
    keys = ["a b", "plus+sign", "amp&lt", "ctrl\x01char", "uni\u00e9"]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b".")
    listed = client.list_objects_v2(Bucket=bucket, EncodingType="url")
    # The client asked for encoding itself, so botocore hands the encoded keys back.
    assert sorted(unquote_plus(o["Key"]) for o in listed["Contents"]) == sorted(keys)
    assert listed["EncodingType"] == "url"


# ------------------------------------------------------------------ multipart


def test_multipart_upload_of_12_mib_round_trips(client, bucket: str) -> None:
    data = os.urandom(12 * MIB)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    client.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=config)
    head = client.head_object(Bucket=bucket, Key="big.bin")
    part_md5s = [hashlib.md5(data[i : i + 5 * MIB]).digest() for i in range(0, len(data), 5 * MIB)]
    assert head["ETag"] == f'"{hashlib.md5(b"".join(part_md5s)).hexdigest()}-3"'
    assert head["ContentLength"] == len(data)
    out = io.BytesIO()
    client.download_fileobj(bucket, "big.bin", out)
    assert out.getvalue() == data


def test_multipart_list_abort_and_errors(client, bucket: str) -> None:
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    uploads = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["UploadId"] for u in uploads] == [upload_id]
    small = client.upload_part(
        Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"small"
    )
    last = client.upload_part(
        Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"last"
    )
    parts = client.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5), (2, 4)]

    def complete(part_list):
        return client.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": part_list}
        )

    assert error_of(
        complete,
        [{"PartNumber": 1, "ETag": small["ETag"]}, {"PartNumber": 2, "ETag": last["ETag"]}],
    ) == ("EntityTooSmall", 400)
    assert error_of(complete, [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]) == (
        "InvalidPart",
        400,
    )
    assert error_of(
        complete,
        [{"PartNumber": 2, "ETag": last["ETag"]}, {"PartNumber": 1, "ETag": small["ETag"]}],
    ) == ("InvalidPartOrder", 400)
    client.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    assert error_of(client.list_parts, Bucket=bucket, Key="k", UploadId=upload_id) == (
        "NoSuchUpload",
        404,
    )


# ------------------------------------------------------------------ checksums


def test_default_crc32_checksum_is_verified_and_returned(client, bucket: str) -> None:
    put = client.put_object(Bucket=bucket, Key="k", Body=b"payload")
    expected = base64.b64encode(zlib.crc32(b"payload").to_bytes(4, "big")).decode()
    assert put["ChecksumCRC32"] == expected
    got = client.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == expected
    assert got["Body"].read() == b"payload"


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA1", "CRC32C", "CRC64NVME"])
def test_requested_checksum_algorithm_is_stored(client, bucket: str, algorithm: str) -> None:
    put = client.put_object(Bucket=bucket, Key="k", Body=b"payload", ChecksumAlgorithm=algorithm)
    got = client.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == put[f"Checksum{algorithm}"]


def test_wrong_checksum_header_is_bad_digest(client, bucket: str) -> None:
    wrong = base64.b64encode(b"\0\0\0\0").decode()
    assert error_of(client.put_object, Bucket=bucket, Key="k", Body=b"x", ChecksumCRC32=wrong) == (
        "BadDigest",
        400,
    )
    assert error_of(client.head_object, Bucket=bucket, Key="k") == ("404", 404)


def test_wrong_content_md5_is_bad_digest(client, bucket: str) -> None:
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert error_of(client.put_object, Bucket=bucket, Key="k", Body=b"x", ContentMD5=wrong) == (
        "BadDigest",
        400,
    )


def test_payload_not_matching_signed_sha256_is_rejected(server: ServerProcess, bucket: str) -> None:
    status, body = raw_request(
        server,
        "PUT",
        f"/{bucket}/k",
        b"actual",
        {"x-amz-content-sha256": hashlib.sha256(b"claimed").hexdigest()},
    )
    assert status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in body


def test_aws_chunked_upload_with_trailing_checksum(
    server: ServerProcess, client, bucket: str
) -> None:
    data = b"a" * 70_000 + b"b" * 10
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = (
        f"{65536:x}\r\n".encode()
        + data[:65536]
        + b"\r\n"
        + f"{len(data) - 65536:x}\r\n".encode()
        + data[65536:]
        + b"\r\n"
        + b"0\r\n"
        + f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    )
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": str(len(data)),
    }
    status, _ = raw_request(server, "PUT", f"/{bucket}/chunked", body, headers)
    assert status == 200
    got = client.get_object(Bucket=bucket, Key="chunked", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ChecksumCRC32"] == crc
    assert "ContentEncoding" not in got


def test_aws_chunked_upload_with_wrong_trailing_checksum_is_bad_digest(
    server: ServerProcess, bucket: str
) -> None:
    body = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": "3",
    }
    status, response = raw_request(server, "PUT", f"/{bucket}/bad", body, headers)
    assert status == 400 and b"<Code>BadDigest</Code>" in response


def test_signed_streaming_upload_is_verified_chunk_by_chunk(
    server: ServerProcess, client, bucket: str
) -> None:
    # STREAMING-AWS4-HMAC-SHA256-PAYLOAD, as the Java / Go / JS SDKs send over http.
    access, secret = server.credentials
    data = os.urandom(150_000)
    request = AWSRequest(
        method="PUT",
        url=f"{server.url}/{bucket}/streamed",
        headers={
            "content-encoding": "aws-chunked",
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "x-amz-decoded-content-length": str(len(data)),
        },
    )
    SigV4Auth(Credentials(access, secret), "s3", REGION).add_auth(request)
    seed = request.headers["Authorization"].rpartition("Signature=")[2]
    amz_date = request.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    key = signing_key(secret, amz_date[:8], REGION, "s3")

    def encode(chunks: list[bytes]) -> bytes:
        previous, out = seed, bytearray()
        for chunk in [*chunks, b""]:
            to_sign = (
                f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n"
                f"{EMPTY_SHA256}\n{hashlib.sha256(chunk).hexdigest()}"
            )
            previous = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
            out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
        return bytes(out)

    def send(body: bytes) -> tuple[int, bytes]:
        prepared = request.prepare()
        headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
        http_request = urllib.request.Request(
            prepared.url, data=body, method="PUT", headers=headers
        )
        try:
            with urllib.request.urlopen(http_request) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    chunks = [data[:65536], data[65536:131072], data[131072:]]
    assert send(encode(chunks)) == (200, b"")
    assert client.get_object(Bucket=bucket, Key="streamed")["Body"].read() == data
    tampered = encode(chunks).replace(data[70_000:70_010], bytes(10))
    status, body = send(tampered)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body
    assert client.get_object(Bucket=bucket, Key="streamed")["Body"].read() == data


def test_declared_size_over_5_gib_is_entity_too_large(server: ServerProcess, bucket: str) -> None:
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(5 * 1024 * MIB + 1),
    }
    status, body = raw_request(server, "PUT", f"/{bucket}/huge", b"0\r\n\r\n", headers)
    assert status == 400 and b"<Code>EntityTooLarge</Code>" in body


# ------------------------------------------------------------------ presigned URLs, auth


@pytest.fixture(scope="module")
def signer(server: ServerProcess):
    """A client whose presigned URLs are SigV4 (boto3's S3 default is the legacy form)."""
    access, secret = server.credentials
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4"),
    )


def test_presigned_get_and_put_work_with_urllib(signer, bucket: str) -> None:
    put_url = signer.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "p k+1"})
    request = urllib.request.Request(put_url, data=b"via presign", method="PUT")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    get_url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p k+1"})
    with urllib.request.urlopen(get_url) as response:
        assert response.read() == b"via presign"


def test_boto3_default_presigned_urls_work_with_urllib(
    server: ServerProcess, client, bucket: str
) -> None:
    # boto3's default S3 presigned URLs use the legacy query form (AWSAccessKeyId,
    # Signature, Expires).
    put_url = client.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "v2 key"}
    )
    assert "AWSAccessKeyId=" in put_url
    request = urllib.request.Request(
        put_url, data=b"legacy", method="PUT", headers={"Content-Type": ""}
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    get_url = client.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "v2 key", "ResponseContentType": "text/x-test"},
    )
    with urllib.request.urlopen(get_url) as response:
        assert response.read() == b"legacy"
        assert response.headers["Content-Type"] == "text/x-test"


def test_expired_or_tampered_legacy_presigned_url_is_refused(
    server: ServerProcess, client, bucket: str
) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    expired = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=-10
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(expired)
    assert caught.value.code == 403 and b"<Code>AccessDenied</Code>" in caught.value.read()
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url.replace("/k?", "/j?"))
    assert caught.value.code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in caught.value.read()


def test_tampered_presigned_url_is_signature_does_not_match(signer, client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url.replace("/k?", "/other?"))
    assert caught.value.code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in caught.value.read()


def test_wrong_secret_is_signature_does_not_match(server: ServerProcess, bucket: str) -> None:
    status, body = raw_request(server, "GET", f"/{bucket}", secret="wrong-secret")
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body


def test_unknown_access_key_is_invalid_access_key_id(server: ServerProcess) -> None:
    stranger = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id="AKIAUNKNOWN",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}),
    )
    assert error_of(stranger.list_buckets) == ("InvalidAccessKeyId", 403)


def test_unsigned_request_is_access_denied(server: ServerProcess, bucket: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server.url}/{bucket}/k")
    assert caught.value.code == 403
    assert b"<Code>AccessDenied</Code>" in caught.value.read()


def test_unsupported_subresource_is_not_implemented(client, bucket: str) -> None:
    assert error_of(client.get_bucket_policy, Bucket=bucket) == ("NotImplemented", 501)


# ------------------------------------------------------------------ awscli


def test_awscli_cp_ls_rm(server: ServerProcess, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(9 * MIB))  # above the CLI's 8 MiB multipart threshold
    env = server.aws_env()

    def aws(*args: str) -> str:
        result = subprocess.run(
            [str(AWS), "--endpoint-url", server.url, "s3", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    aws("cp", str(source), f"s3://{bucket}/dir/in.bin")
    aws("cp", str(tmp_path / "in.bin"), f"s3://{bucket}/top.bin")
    listing = aws("ls", f"s3://{bucket}/")
    assert "PRE dir/" in listing and "top.bin" in listing
    assert "in.bin" in aws("ls", "--recursive", f"s3://{bucket}")
    aws("cp", f"s3://{bucket}/dir/in.bin", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()
    aws("rm", "--recursive", f"s3://{bucket}/")
    assert aws("ls", f"s3://{bucket}/").strip() == ""


def test_awscli_mb_ls_rb(server: ServerProcess) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"

    def aws(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AWS), "--endpoint-url", server.url, "s3", *args],
            env=server.aws_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert aws("mb", f"s3://{name}").returncode == 0
    assert name in aws("ls").stdout
    assert aws("mb", "s3://Not_Valid").returncode != 0
    assert aws("rb", f"s3://{name}").returncode == 0
    assert name not in aws("ls").stdout


# ------------------------------------------------------------------ multipart: checksums, parts


def multipart(
    client, bucket: str, key: str, algorithm: str | None = None, **create
) -> tuple[str, list[dict], bytes]:
    """A two-part upload (5 MiB + a tail), parts listed as boto3 returns them."""
    if algorithm:
        create["ChecksumAlgorithm"] = algorithm
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    data = [os.urandom(5 * MIB), b"tail of the object"]
    parts = []
    for number, chunk in enumerate(data, 1):
        extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        response = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk, **extra
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if algorithm:
            part[f"Checksum{algorithm}"] = response[f"Checksum{algorithm}"]
        parts.append(part)
    return upload_id, parts, b"".join(data)


def composite_checksum(algorithm: str, parts: list[dict]) -> str:
    from sagequeue.stores.objects import new_checksum

    combined = new_checksum(algorithm)
    for part in parts:
        combined.update(base64.b64decode(part[f"Checksum{algorithm}"]))
    return f"{combined.b64()}-{len(parts)}"


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_complete_with_the_composite_checksum_of_the_object(
    client, bucket: str, algorithm: str
) -> None:
    upload_id, parts, _ = multipart(client, bucket, "k", algorithm)
    expected = composite_checksum(algorithm, parts)
    done = client.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        **{f"Checksum{algorithm}": expected},
    )
    assert done[f"Checksum{algorithm}"] == expected
    assert done["ChecksumType"] == "COMPOSITE"
    head = client.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == expected


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_full_object_checksum_is_the_crc_of_the_whole_object(
    client, bucket: str, algorithm: str
) -> None:
    from sagequeue.stores.objects import new_checksum

    upload_id, parts, data = multipart(client, bucket, "k", algorithm, ChecksumType="FULL_OBJECT")
    whole = new_checksum(algorithm)
    whole.update(data)
    done = client.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        ChecksumType="FULL_OBJECT",
        **{f"Checksum{algorithm}": whole.b64()},
    )
    assert (done[f"Checksum{algorithm}"], done["ChecksumType"]) == (whole.b64(), "FULL_OBJECT")


def test_wrong_whole_object_checksum_is_bad_digest(client, bucket: str) -> None:
    upload_id, parts, _ = multipart(client, bucket, "k", "CRC32")
    assert error_of(
        client.complete_multipart_upload,
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        ChecksumCRC32="AAAAAA==-2",
    ) == ("BadDigest", 400)


def test_repeating_a_successful_completion_answers_the_same_result(client, bucket: str) -> None:
    upload_id, parts, _ = multipart(client, bucket, "k")
    complete = {"Bucket": bucket, "Key": "k", "UploadId": upload_id}
    first = client.complete_multipart_upload(**complete, MultipartUpload={"Parts": parts})
    again = client.complete_multipart_upload(**complete, MultipartUpload={"Parts": parts})
    assert again["ETag"] == first["ETag"]


def test_a_part_number_listed_twice_is_accepted(client, bucket: str) -> None:
    upload_id, parts, data = multipart(client, bucket, "k")
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [parts[0], parts[0], parts[1]]},
    )
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == data


def test_get_and_head_with_part_number_return_that_part(client, bucket: str) -> None:
    upload_id, parts, data = multipart(client, bucket, "k")
    client.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    got = client.get_object(Bucket=bucket, Key="k", PartNumber=2)
    assert got["Body"].read() == data[5 * MIB :]
    assert got["PartsCount"] == 2
    assert got["ContentRange"] == f"bytes {5 * MIB}-{len(data) - 1}/{len(data)}"
    head = client.head_object(Bucket=bucket, Key="k", PartNumber=1)
    assert (head["ContentLength"], head["PartsCount"]) == (5 * MIB, 2)
    assert error_of(client.get_object, Bucket=bucket, Key="k", PartNumber=3) == (
        "InvalidPart",
        400,
    )


def test_object_attributes_list_parts_checksum_and_size(client, bucket: str) -> None:
    upload_id, parts, data = multipart(client, bucket, "k", "SHA256")
    client.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    attributes = client.get_object_attributes(
        Bucket=bucket,
        Key="k",
        ObjectAttributes=["ETag", "Checksum", "ObjectParts", "ObjectSize", "StorageClass"],
    )
    assert attributes["ObjectSize"] == len(data)
    assert attributes["StorageClass"] == "STANDARD"
    assert attributes["ETag"].endswith("-2") and '"' not in attributes["ETag"]
    assert attributes["Checksum"]["ChecksumType"] == "COMPOSITE"
    object_parts = attributes["ObjectParts"]
    assert object_parts["TotalPartsCount"] == 2
    assert [(p["PartNumber"], p["Size"]) for p in object_parts["Parts"]] == [
        (1, 5 * MIB),
        (2, len(data) - 5 * MIB),
    ]
    assert object_parts["Parts"][0]["ChecksumSHA256"] == parts[0]["ChecksumSHA256"]


def test_upload_part_copy_copies_a_range_of_another_object(client, bucket: str) -> None:
    source = os.urandom(6 * MIB)
    client.put_object(Bucket=bucket, Key="source", Body=source)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="copy")["UploadId"]
    copied = []
    for number, (first, last) in enumerate([(0, 5 * MIB - 1), (5 * MIB, 6 * MIB - 1)], 1):
        result = client.upload_part_copy(
            Bucket=bucket,
            Key="copy",
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": "source"},
            CopySourceRange=f"bytes={first}-{last}",
        )
        etag = result["CopyPartResult"]["ETag"]
        assert etag == f'"{hashlib.md5(source[first : last + 1]).hexdigest()}"'
        copied.append({"PartNumber": number, "ETag": etag})
    client.complete_multipart_upload(
        Bucket=bucket, Key="copy", UploadId=upload_id, MultipartUpload={"Parts": copied}
    )
    assert client.get_object(Bucket=bucket, Key="copy")["Body"].read() == source


def test_awscli_copies_a_large_object_between_buckets(
    server: ServerProcess, client, bucket: str, tmp_path: Path
) -> None:
    # Over the CLI's multipart threshold a bucket-to-bucket copy is UploadPartCopy.
    other = f"t-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=other)
    data = os.urandom(9 * MIB)
    client.put_object(Bucket=bucket, Key="big", Body=data)
    result = subprocess.run(
        [
            str(AWS),
            "--endpoint-url",
            server.url,
            "s3",
            "cp",
            f"s3://{bucket}/big",
            f"s3://{other}/big",
        ],
        env=server.aws_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    head = client.head_object(Bucket=other, Key="big")
    assert head["ETag"].endswith('-2"'), "the CLI did not copy in parts"
    assert client.get_object(Bucket=other, Key="big")["Body"].read() == data


# ------------------------------------------------------------------ listings


def test_max_keys_zero_lists_nothing_and_is_not_truncated(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    for listing in (client.list_objects, client.list_objects_v2):
        response = listing(Bucket=bucket, MaxKeys=0)
        assert response["IsTruncated"] is False
        assert "Contents" not in response


def test_list_objects_v1_prefix_comes_back_as_given(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="a b/c+d", Body=b"x")
    response = client.list_objects(Bucket=bucket, Prefix="a b/", Delimiter="/")
    assert response["Prefix"] == "a b/"
    assert [o["Key"] for o in response["Contents"]] == ["a b/c+d"]


def test_empty_continuation_token_is_echoed(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    response = client.list_objects_v2(Bucket=bucket, ContinuationToken="")
    assert response["ContinuationToken"] == ""
    assert [o["Key"] for o in response["Contents"]] == ["k"]


def test_list_buckets_paginates_with_max_buckets(client) -> None:
    prefix = f"pg-{uuid.uuid4().hex[:8]}-"
    names = [f"{prefix}{i}" for i in range(3)]
    for name in names:
        client.create_bucket(Bucket=name)
    seen: list[str] = []
    pages = 0
    params: dict = {"MaxBuckets": 2, "Prefix": prefix}
    while True:
        response = client.list_buckets(**params)
        pages += 1
        seen += [b["Name"] for b in response["Buckets"]]
        if "ContinuationToken" not in response:
            break
        params["ContinuationToken"] = response["ContinuationToken"]
    assert (seen, pages) == (names, 2)
    paginated = client.get_paginator("list_buckets").paginate(
        Prefix=prefix, PaginationConfig={"PageSize": 1}
    )
    assert [b["Name"] for page in paginated for b in page["Buckets"]] == names


def test_list_object_versions_of_an_unversioned_bucket(client, bucket: str) -> None:
    for key in ("a", "b"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    response = client.list_object_versions(Bucket=bucket, MaxKeys=1)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in response["Versions"]] == [
        ("a", "null", True)
    ]
    assert response["IsTruncated"] is True
    rest = client.list_object_versions(
        Bucket=bucket,
        KeyMarker=response["NextKeyMarker"],
        VersionIdMarker=response["NextVersionIdMarker"],
    )
    assert [v["Key"] for v in rest["Versions"]] == ["b"]
    client.delete_object(Bucket=bucket, Key="a", VersionId="null")
    assert error_of(client.head_object, Bucket=bucket, Key="a") == ("404", 404)


def test_bucket_versioning_was_never_enabled_and_cannot_be(client, bucket: str) -> None:
    response = client.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in response
    assert error_of(
        client.put_bucket_versioning,
        Bucket=bucket,
        VersioningConfiguration={"Status": "Enabled"},
    ) == ("NotImplemented", 501)


# ------------------------------------------------------------------ stored headers


def test_content_encoding_comes_back_exactly_as_sent(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x", ContentEncoding="deflate, gzip")
    assert client.head_object(Bucket=bucket, Key="k")["ContentEncoding"] == "deflate, gzip"


def test_aws_chunked_named_on_a_plain_body_is_dropped_from_content_encoding(
    client, bucket: str
) -> None:
    for sent, kept in (("gzip, aws-chunked", "gzip"), ("aws-chunked, gzip", "gzip")):
        client.put_object(Bucket=bucket, Key="k", Body=b"", ContentEncoding=sent)
        assert client.head_object(Bucket=bucket, Key="k")["ContentEncoding"] == kept
    client.put_object(Bucket=bucket, Key="k", Body=b"x", ContentEncoding="aws-chunked")
    assert "ContentEncoding" not in client.head_object(Bucket=bucket, Key="k")


def test_non_ascii_metadata_comes_back_rfc2047_encoded_once(
    server: ServerProcess, client, bucket: str
) -> None:
    encoded = "=?UTF-8?B?" + base64.b64encode("café ☕".encode()).decode() + "?="
    # Sent RFC 2047-encoded (as mail-safe clients do) ...
    client.put_object(Bucket=bucket, Key="a", Body=b"x", Metadata={"name": encoded})
    assert client.head_object(Bucket=bucket, Key="a")["Metadata"]["name"] == encoded
    # ... or as raw UTF-8: S3 stores the text and answers it RFC 2047-encoded.
    access, secret = server.credentials
    request = AWSRequest(
        method="PUT",
        url=f"{server.url}/{bucket}/b",
        data=b"x",
        headers={"x-amz-meta-name": "café ☕", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )
    SigV4Auth(Credentials(access, secret), "s3", REGION).add_auth(request)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("PUT", f"/{bucket}/b")
    for name, value in request.headers.items():
        connection.putheader(name, value.encode("utf-8"))
    connection.putheader("Content-Length", "1")
    connection.endheaders(b"x")
    assert connection.getresponse().status == 200
    connection.close()
    assert client.head_object(Bucket=bucket, Key="b")["Metadata"]["name"] == encoded


# ------------------------------------------------------------------ conditional writes


def test_if_none_match_star_does_not_overwrite(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    assert error_of(client.put_object, Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*") == (
        "PreconditionFailed",
        412,
    )
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_if_match_on_put_replaces_only_that_version(client, bucket: str) -> None:
    etag = client.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    assert error_of(
        client.put_object, Bucket=bucket, Key="k", Body=b"x", IfMatch='"' + "0" * 32 + '"'
    ) == ("PreconditionFailed", 412)
    client.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=etag)
    assert error_of(client.put_object, Bucket=bucket, Key="new", Body=b"x", IfMatch=etag) == (
        "NoSuchKey",
        404,
    )


def test_complete_with_if_none_match_does_not_overwrite(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"there")
    upload_id, parts, _ = multipart(client, bucket, "k")
    assert error_of(
        client.complete_multipart_upload,
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        IfNoneMatch="*",
    ) == ("PreconditionFailed", 412)


def test_delete_with_if_match_deletes_only_that_version(client, bucket: str) -> None:
    etag = client.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    assert error_of(client.delete_object, Bucket=bucket, Key="k", IfMatch='"' + "0" * 32 + '"') == (
        "PreconditionFailed",
        412,
    )
    client.delete_object(Bucket=bucket, Key="k", IfMatch=etag)
    assert error_of(client.head_object, Bucket=bucket, Key="k") == ("404", 404)


# ------------------------------------------------------------------ encryption


def test_sse_s3_is_stored_encrypted_and_reported(
    server: ServerProcess, client, bucket: str
) -> None:
    secret = b"plain text that must not be on disk " * 50
    put = client.put_object(Bucket=bucket, Key="k", Body=secret, ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    assert client.head_object(Bucket=bucket, Key="k")["ServerSideEncryption"] == "AES256"
    got = client.get_object(Bucket=bucket, Key="k")
    assert (got["Body"].read(), got["ServerSideEncryption"]) == (secret, "AES256")
    files = [p for p in (server.data_dir / "objects" / "data").rglob("*") if p.is_file()]
    assert not any(b"must not be on disk" in p.read_bytes() for p in files)


def test_sse_c_and_sse_kms_are_not_implemented(client, bucket: str) -> None:
    key = os.urandom(32)
    assert error_of(
        client.put_object,
        Bucket=bucket,
        Key="k",
        Body=b"x",
        SSECustomerAlgorithm="AES256",
        SSECustomerKey=key,
    ) == ("NotImplemented", 501)
    assert error_of(
        client.put_object, Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms"
    ) == ("NotImplemented", 501)
    client.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert error_of(
        client.get_object,
        Bucket=bucket,
        Key="plain",
        SSECustomerAlgorithm="AES256",
        SSECustomerKey=key,
    ) == ("NotImplemented", 501)


# ------------------------------------------------------------------ what is refused


def test_object_lock_retention_and_legal_hold_are_not_implemented(client, bucket: str) -> None:
    import datetime

    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    refused = [
        error_of(
            client.put_object,
            Bucket=bucket,
            Key="locked",
            Body=b"x",
            ObjectLockMode="GOVERNANCE",
            ObjectLockRetainUntilDate=until,
        ),
        error_of(client.get_object_lock_configuration, Bucket=bucket),
        error_of(client.put_object_legal_hold, Bucket=bucket, Key="k", LegalHold={"Status": "ON"}),
        error_of(
            client.put_object_retention,
            Bucket=bucket,
            Key="k",
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
        ),
        error_of(
            client.create_bucket,
            Bucket=f"lock-{uuid.uuid4().hex[:8]}",
            ObjectLockEnabledForBucket=True,
        ),
    ]
    assert refused == [("NotImplemented", 501)] * 5


def test_acls_other_than_private_are_not_implemented(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="private")
    assert error_of(client.put_object, Bucket=bucket, Key="k", Body=b"x", ACL="public-read") == (
        "NotImplemented",
        501,
    )
    assert error_of(
        client.put_object, Bucket=bucket, Key="k", Body=b"x", GrantRead="uri=everyone"
    ) == ("NotImplemented", 501)
    grants = client.get_object_acl(Bucket=bucket, Key="k")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    client.put_bucket_acl(Bucket=bucket, ACL="private")
    assert error_of(client.put_bucket_acl, Bucket=bucket, ACL="public-read") == (
        "NotImplemented",
        501,
    )


def test_headers_that_change_an_object_are_refused_not_ignored(client, bucket: str) -> None:
    assert error_of(
        client.put_object, Bucket=bucket, Key="k", Body=b"x", StorageClass="GLACIER"
    ) == ("NotImplemented", 501)
    assert error_of(
        client.put_object, Bucket=bucket, Key="k", Body=b"x", WebsiteRedirectLocation="/other"
    ) == ("NotImplemented", 501)
    assert error_of(client.head_object, Bucket=bucket, Key="k") == ("404", 404)


def test_browser_post_upload_is_not_implemented(server: ServerProcess, bucket: str) -> None:
    body = (
        b'--x\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n'
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\ndata\r\n'
        b"--x--\r\n"
    )
    request = urllib.request.Request(
        f"{server.url}/{bucket}",
        data=body,
        method="POST",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 501
    assert b"<Code>NotImplemented</Code>" in caught.value.read()


# ------------------------------------------------------------------ tagging


def test_object_tagging_life_cycle(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="team=a&stage=raw%20data")
    tags = client.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "a", "stage": "raw data"}
    assert client.get_object(Bucket=bucket, Key="k")["TagCount"] == 2
    client.put_object_tagging(
        Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "new", "Value": "1"}]}
    )
    assert client.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [
        {"Key": "new", "Value": "1"}
    ]
    client.delete_object_tagging(Bucket=bucket, Key="k")
    assert client.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []


def test_invalid_tags_are_invalid_tag(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    eleven = [{"Key": f"k{i}", "Value": "v"} for i in range(11)]
    assert error_of(
        client.put_object_tagging, Bucket=bucket, Key="k", Tagging={"TagSet": eleven}
    ) == ("InvalidTag", 400)
    assert error_of(client.put_object, Bucket=bucket, Key="k", Body=b"x", Tagging="a=1&a=2") == (
        "InvalidTag",
        400,
    )


def test_copy_and_multipart_carry_tags(client, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="src", Body=b"x", Tagging="a=1")
    client.copy_object(Bucket=bucket, Key="kept", CopySource=f"{bucket}/src")
    client.copy_object(
        Bucket=bucket,
        Key="replaced",
        CopySource=f"{bucket}/src",
        TaggingDirective="REPLACE",
        Tagging="b=2",
    )
    upload_id, parts, _ = multipart(client, bucket, "mpu", Tagging="c=3")
    client.complete_multipart_upload(
        Bucket=bucket, Key="mpu", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    tags = {
        key: client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        for key in ("kept", "replaced", "mpu")
    }
    assert tags == {
        "kept": [{"Key": "a", "Value": "1"}],
        "replaced": [{"Key": "b", "Value": "2"}],
        "mpu": [{"Key": "c", "Value": "3"}],
    }


# ------------------------------------------------------------------ CORS


CORS_RULES = {
    "CORSRules": [
        {
            "AllowedOrigins": ["https://app.example.com"],
            "AllowedMethods": ["GET", "PUT"],
            "AllowedHeaders": ["content-type", "x-amz-*"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 600,
        }
    ]
}


def preflight(server: ServerProcess, path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    """An unsigned OPTIONS request, as a browser sends it: (status, headers, body)."""
    request = urllib.request.Request(server.url + path, method="OPTIONS", headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_bucket_cors_round_trips(client, bucket: str) -> None:
    assert error_of(client.get_bucket_cors, Bucket=bucket) == ("NoSuchCORSConfiguration", 404)
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration=CORS_RULES)
    assert client.get_bucket_cors(Bucket=bucket)["CORSRules"] == CORS_RULES["CORSRules"]
    client.delete_bucket_cors(Bucket=bucket)
    assert error_of(client.get_bucket_cors, Bucket=bucket) == ("NoSuchCORSConfiguration", 404)


def test_cors_preflight_is_answered_from_the_rules(
    server: ServerProcess, client, bucket: str
) -> None:
    asking = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "Content-Type, X-Amz-Date",
    }
    status, _, body = preflight(server, f"/{bucket}/k", asking)
    assert status == 403 and b"CORS is not enabled for this bucket" in body
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration=CORS_RULES)
    status, headers, _ = preflight(server, f"/{bucket}/k", asking)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert headers["Access-Control-Allow-Methods"] == "GET, PUT"
    assert headers["Access-Control-Allow-Headers"] == "content-type, x-amz-date"
    assert headers["Access-Control-Max-Age"] == "600"
    for refused in (
        {**asking, "Origin": "https://evil.example.com"},
        {**asking, "Access-Control-Request-Method": "DELETE"},
        {**asking, "Access-Control-Request-Headers": "authorization-extra"},
    ):
        status, _, body = preflight(server, f"/{bucket}/k", refused)
        assert status == 403 and b"<Code>AccessForbidden</Code>" in body


def test_presigned_get_from_an_allowed_origin_gets_cors_headers(
    signer, client, bucket: str
) -> None:
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration=CORS_RULES)
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    request = urllib.request.Request(url, headers={"Origin": "https://app.example.com"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert response.headers["Access-Control-Expose-Headers"] == "ETag"


# ------------------------------------------------------------------ response header injection


@pytest.mark.parametrize(
    "value", ["text/plain\r\nX-Injected: 1", "text/plain\nx", "a\x00b", "a\x7f"]
)
def test_response_override_with_control_characters_is_invalid_argument(
    signer, client, bucket: str, value: str
) -> None:
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k", "ResponseContentType": value}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url)
    assert caught.value.code == 400
    assert b"<Code>InvalidArgument</Code>" in caught.value.read()


# ------------------------------------------------------------------ a full disk


def test_delete_object_frees_space_on_a_full_disk(server_factory, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        server = server_factory("--object-store", f"file://{disk / 'objects'}")
        client = server.client("s3")
        client.create_bucket(Bucket="full")
        client.put_object(Bucket="full", Key="k", Body=os.urandom(200_000))
        # Something else fills the disk up.
        with (disk / "filler").open("wb", buffering=0) as filler, pytest.raises(OSError):
            while True:
                filler.write(b"\0" * 4096)
        assert error_of(client.put_object, Bucket="full", Key="more", Body=b"x" * 100_000) == (
            "InsufficientStorage",
            507,
        )
        response = client.delete_object(Bucket="full", Key="k")
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
        client.put_object(Bucket="full", Key="after", Body=os.urandom(100_000))
        server.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
