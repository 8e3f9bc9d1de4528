"""ObjectBackend contract: every adapter behaves alike.

Runs against the local-disk store and against S3ObjectStore talking to moto's server
mode (an independent S3 implementation), started here as a subprocess.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagequeue.config import Settings
from sagequeue.domain.errors import S3Error
from sagequeue.stores.objects import (
    MIB,
    CompletedPart,
    CorsRule,
    ObjectBackend,
    WriteCondition,
    multipart_etag,
    new_checksum,
    open_object_backend,
    parse_s3_uri,
    upload_file_if_changed,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["local", "s3"])
async def objects(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ObjectBackend]:
    settings = Settings(data_dir=tmp_path)
    if request.param == "local":
        url = f"file://{tmp_path / 'objects'}"
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        settings.s3_endpoint_url = endpoint
        # The standard AWS credential chain: moto accepts any key pair.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        url = "s3://"
    store = await open_object_backend(url, settings)
    yield store
    await store.close()


@pytest.fixture
async def bucket(objects: ObjectBackend) -> str:
    # Unique per test: the moto server is shared by the module.
    name = f"b-{uuid.uuid4().hex[:12]}"
    await objects.create_bucket(name)
    return name


async def body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def get_bytes(store: ObjectBackend, bucket: str, key: str) -> bytes:
    _, stream = await store.get_object(bucket, key)
    return await read_all(stream)


async def error_code(awaitable) -> str:
    with pytest.raises(S3Error) as caught:
        await awaitable
    return caught.value.code


# ------------------------------------------------------------------ buckets


async def test_created_bucket_is_listed_and_heads(objects: ObjectBackend, bucket: str) -> None:
    assert bucket in [b.name for b in await objects.list_buckets()]
    assert (await objects.head_bucket(bucket)).name == bucket


async def test_creating_an_existing_bucket_is_bucket_already_owned(
    objects: ObjectBackend, bucket: str
) -> None:
    assert await error_code(objects.create_bucket(bucket)) == "BucketAlreadyOwnedByYou"


async def test_ensure_bucket_accepts_an_existing_bucket(
    objects: ObjectBackend, bucket: str
) -> None:
    await objects.ensure_bucket(bucket)
    await objects.ensure_bucket(bucket)
    assert (await objects.head_bucket(bucket)).name == bucket


async def test_invalid_bucket_name_is_refused(objects: ObjectBackend) -> None:
    for name in ("UPPER", "a", "with_underscore", "192.168.1.1", "a..b", "-lead"):
        assert await error_code(objects.create_bucket(name)) == "InvalidBucketName"


async def test_deleting_a_non_empty_bucket_is_bucket_not_empty(
    objects: ObjectBackend, bucket: str
) -> None:
    await objects.put_object(bucket, "k", body(b"x"))
    assert await error_code(objects.delete_bucket(bucket)) == "BucketNotEmpty"


async def test_deleted_bucket_is_gone(objects: ObjectBackend, bucket: str) -> None:
    await objects.delete_bucket(bucket)
    assert await error_code(objects.head_bucket(bucket)) == "NoSuchBucket"


async def test_object_in_missing_bucket_is_no_such_bucket(objects: ObjectBackend) -> None:
    code = await error_code(objects.put_object("no-such-bucket-here", "k", body(b"x")))
    assert code == "NoSuchBucket"


# ------------------------------------------------------------------ objects


async def test_object_round_trips_with_its_attributes(objects: ObjectBackend, bucket: str) -> None:
    data = b"hello world"
    info = await objects.put_object(
        bucket,
        "dir/file.txt",
        body(b"hello ", b"world"),
        content_type="text/plain",
        metadata={"color": "blue"},
        headers={"content-disposition": "attachment", "cache-control": "no-cache"},
    )
    assert info.etag == hashlib.md5(data).hexdigest()
    got, stream = await objects.get_object(bucket, "dir/file.txt")
    assert await read_all(stream) == data
    assert (got.size, got.etag, got.content_type) == (len(data), info.etag, "text/plain")
    assert got.metadata == {"color": "blue"}
    assert got.headers["content-disposition"] == "attachment"
    assert got.headers["cache-control"] == "no-cache"


async def test_empty_object_round_trips(objects: ObjectBackend, bucket: str) -> None:
    info = await objects.put_object(bucket, "empty", body())
    assert info.size == 0 and info.etag == hashlib.md5(b"").hexdigest()
    assert await get_bytes(objects, bucket, "empty") == b""


async def test_byte_range_returns_those_bytes(objects: ObjectBackend, bucket: str) -> None:
    await objects.put_object(bucket, "k", body(b"0123456789"))
    info, stream = await objects.get_object(bucket, "k", (2, 5))
    assert await read_all(stream) == b"2345"
    assert info.size == 10


async def test_overwrite_replaces_body_and_metadata(objects: ObjectBackend, bucket: str) -> None:
    await objects.put_object(bucket, "k", body(b"old"), metadata={"v": "1"})
    await objects.put_object(bucket, "k", body(b"new!"), metadata={"v": "2"})
    info = await objects.head_object(bucket, "k")
    assert (info.size, info.metadata) == (4, {"v": "2"})
    assert await get_bytes(objects, bucket, "k") == b"new!"


async def test_failing_body_stores_nothing_and_keeps_the_old_object(
    objects: ObjectBackend, bucket: str
) -> None:
    await objects.put_object(bucket, "k", body(b"old"))

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise S3Error("bad checksum", code="BadDigest", status=400)

    assert await error_code(objects.put_object(bucket, "k", broken())) == "BadDigest"
    assert await get_bytes(objects, bucket, "k") == b"old"
    assert await error_code(objects.put_object(bucket, "fresh", broken())) == "BadDigest"
    assert await error_code(objects.head_object(bucket, "fresh")) == "NoSuchKey"


async def test_missing_key_is_no_such_key(objects: ObjectBackend, bucket: str) -> None:
    assert await error_code(objects.head_object(bucket, "nope")) == "NoSuchKey"
    assert await error_code(objects.get_object(bucket, "nope")) == "NoSuchKey"


async def test_deleted_object_is_gone_and_deleting_again_is_fine(
    objects: ObjectBackend, bucket: str
) -> None:
    await objects.put_object(bucket, "k", body(b"x"))
    await objects.delete_object(bucket, "k")
    await objects.delete_object(bucket, "k")
    assert await error_code(objects.head_object(bucket, "k")) == "NoSuchKey"


async def test_delete_objects_removes_each_key(objects: ObjectBackend, bucket: str) -> None:
    for key in ("a", "b", "c"):
        await objects.put_object(bucket, key, body(b"x"))
    deleted = await objects.delete_objects(bucket, ["a", "c", "absent"])
    assert sorted(deleted) == ["a", "absent", "c"]
    assert [o.key for o in (await objects.list_objects(bucket)).objects] == ["b"]


async def test_copy_keeps_body_and_metadata(objects: ObjectBackend, bucket: str) -> None:
    await objects.put_object(
        bucket, "src", body(b"data"), content_type="text/csv", metadata={"m": "1"}
    )
    info = await objects.copy_object(bucket, "src", bucket, "dst")
    assert info.etag == hashlib.md5(b"data").hexdigest()
    copied = await objects.head_object(bucket, "dst")
    assert (copied.content_type, copied.metadata) == ("text/csv", {"m": "1"})
    assert await get_bytes(objects, bucket, "dst") == b"data"


async def test_copy_with_replace_sets_new_metadata(objects: ObjectBackend, bucket: str) -> None:
    await objects.put_object(bucket, "src", body(b"data"), metadata={"m": "1"})
    await objects.copy_object(
        bucket,
        "src",
        bucket,
        "dst",
        replace_metadata=True,
        content_type="application/json",
        metadata={"n": "2"},
    )
    copied = await objects.head_object(bucket, "dst")
    assert (copied.content_type, copied.metadata) == ("application/json", {"n": "2"})


async def test_checksum_is_computed_and_kept(objects: ObjectBackend, bucket: str) -> None:
    info = await objects.put_object(bucket, "k", body(b"data"), checksum_algorithm="SHA256")
    import base64

    expected = base64.b64encode(hashlib.sha256(b"data").digest()).decode()
    assert info.checksums == {"SHA256": expected}
    assert (await objects.head_object(bucket, "k")).checksums.get("SHA256") == expected


async def test_upload_file_if_changed_skips_identical_content(
    objects: ObjectBackend, bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"model-v1")
    assert await upload_file_if_changed(objects, bucket, "m.tar.gz", path)
    assert not await upload_file_if_changed(objects, bucket, "m.tar.gz", path)
    path.write_bytes(b"model-v2")
    assert await upload_file_if_changed(objects, bucket, "m.tar.gz", path)
    assert await get_bytes(objects, bucket, "m.tar.gz") == b"model-v2"


# ------------------------------------------------------------------ listing

KEYS = ["a", "a/b", "a/c/d", "b", "b/x", "c", "é", "z", "\U0001f600", "ﬀ"]


async def put_keys(store: ObjectBackend, bucket: str, keys: list[str]) -> None:
    for key in keys:
        await store.put_object(bucket, key, body(b"."))


async def test_listing_is_in_utf8_binary_order(objects: ObjectBackend, bucket: str) -> None:
    await put_keys(objects, bucket, KEYS)
    listed = [o.key for o in (await objects.list_objects(bucket)).objects]
    assert listed == sorted(KEYS, key=lambda k: k.encode())


async def test_pagination_returns_every_key_once(objects: ObjectBackend, bucket: str) -> None:
    await put_keys(objects, bucket, KEYS)
    seen: list[str] = []
    token = None
    while True:
        page = await objects.list_objects(bucket, max_keys=3, continuation_token=token)
        seen.extend(o.key for o in page.objects)
        if not page.truncated:
            break
        assert len(page.objects) == 3
        token = page.next_token
    assert seen == sorted(KEYS, key=lambda k: k.encode())


async def test_prefix_and_delimiter_give_common_prefixes(
    objects: ObjectBackend, bucket: str
) -> None:
    await put_keys(objects, bucket, KEYS)
    page = await objects.list_objects(bucket, delimiter="/")
    assert page.common_prefixes == ["a/", "b/"]
    assert "a/b" not in [o.key for o in page.objects]
    page = await objects.list_objects(bucket, prefix="a/", delimiter="/")
    assert [o.key for o in page.objects] == ["a/b"]
    assert page.common_prefixes == ["a/c/"]


async def test_delimiter_pagination_counts_common_prefixes(
    objects: ObjectBackend, bucket: str
) -> None:
    await put_keys(objects, bucket, KEYS)
    entries: list[str] = []
    token = None
    while True:
        page = await objects.list_objects(
            bucket, delimiter="/", max_keys=2, continuation_token=token
        )
        entries.extend([o.key for o in page.objects] + page.common_prefixes)
        if not page.truncated:
            break
        token = page.next_token
    assert sorted(entries) == sorted(["a", "a/", "b", "b/", "c", "é", "z", "\U0001f600", "ﬀ"])


async def test_start_after_skips_earlier_keys(objects: ObjectBackend, bucket: str) -> None:
    await put_keys(objects, bucket, ["k1", "k2", "k3"])
    page = await objects.list_objects(bucket, start_after="k1")
    assert [o.key for o in page.objects] == ["k2", "k3"]


# ------------------------------------------------------------------ multipart


async def test_multipart_upload_assembles_parts_with_s3_etag(
    objects: ObjectBackend, bucket: str
) -> None:
    upload = await objects.create_multipart_upload(
        bucket, "big", content_type="x/y", metadata={"m": "1"}
    )
    first, second = os.urandom(5 * MIB), b"tail"
    p1 = await objects.upload_part(bucket, "big", upload.upload_id, 1, body(first))
    p2 = await objects.upload_part(bucket, "big", upload.upload_id, 2, body(second))
    assert [p.part_number for p in await objects.list_parts(bucket, "big", upload.upload_id)] == [
        1,
        2,
    ]
    info = await objects.complete_multipart_upload(
        bucket, "big", upload.upload_id, [(1, p1.etag), (2, p2.etag)]
    )
    assert info.etag == multipart_etag([p1.etag, p2.etag])
    assert info.etag.endswith("-2")
    head = await objects.head_object(bucket, "big")
    assert (head.size, head.content_type, head.metadata) == (5 * MIB + 4, "x/y", {"m": "1"})
    assert await get_bytes(objects, bucket, "big") == first + second


async def test_small_non_last_part_is_entity_too_small(objects: ObjectBackend, bucket: str) -> None:
    upload = await objects.create_multipart_upload(bucket, "k")
    p1 = await objects.upload_part(bucket, "k", upload.upload_id, 1, body(b"small"))
    p2 = await objects.upload_part(bucket, "k", upload.upload_id, 2, body(b"last"))
    code = await error_code(
        objects.complete_multipart_upload(
            bucket, "k", upload.upload_id, [(1, p1.etag), (2, p2.etag)]
        )
    )
    assert code == "EntityTooSmall"


async def test_wrong_part_etag_is_invalid_part(objects: ObjectBackend, bucket: str) -> None:
    upload = await objects.create_multipart_upload(bucket, "k")
    await objects.upload_part(bucket, "k", upload.upload_id, 1, body(b"x"))
    code = await error_code(
        objects.complete_multipart_upload(bucket, "k", upload.upload_id, [(1, "0" * 32)])
    )
    assert code == "InvalidPart"


async def test_parts_out_of_order_are_invalid_part_order(
    objects: ObjectBackend, bucket: str
) -> None:
    upload = await objects.create_multipart_upload(bucket, "k")
    p1 = await objects.upload_part(bucket, "k", upload.upload_id, 1, body(b"x" * (5 * MIB)))
    p2 = await objects.upload_part(bucket, "k", upload.upload_id, 2, body(b"y"))
    code = await error_code(
        objects.complete_multipart_upload(
            bucket, "k", upload.upload_id, [(2, p2.etag), (1, p1.etag)]
        )
    )
    assert code == "InvalidPartOrder"


async def test_aborted_upload_is_no_such_upload(objects: ObjectBackend, bucket: str) -> None:
    upload = await objects.create_multipart_upload(bucket, "k")
    assert [u.upload_id for u in await objects.list_multipart_uploads(bucket)] == [upload.upload_id]
    await objects.abort_multipart_upload(bucket, "k", upload.upload_id)
    assert await objects.list_multipart_uploads(bucket) == []
    code = await error_code(objects.upload_part(bucket, "k", upload.upload_id, 1, body(b"x")))
    assert code == "NoSuchUpload"


# ------------------------------------------------------------------ multipart checksums

FIRST_PART = os.urandom(5 * MIB)
LAST_PART = b"the last part"


def on_moto(store: ObjectBackend) -> bool:
    return store.__class__.__name__ == "S3ObjectStore"


def skip_moto_crc32c(store: ObjectBackend, algorithm: str) -> None:
    if algorithm == "CRC32C" and on_moto(store):
        pytest.skip("moto's CRC32C of a multipart object is not S3's (nor awscrt's)")


def checksum_of(algorithm: str, data: bytes) -> str:
    checksum = new_checksum(algorithm)
    checksum.update(data)
    return checksum.b64()


async def two_part_upload(
    store: ObjectBackend, bucket: str, key: str, algorithm: str | None, kind: str | None = None
) -> tuple[str, list[CompletedPart]]:
    upload = await store.create_multipart_upload(
        bucket, key, checksum_algorithm=algorithm, checksum_type=kind
    )
    parts = []
    for number, data in ((1, FIRST_PART), (2, LAST_PART)):
        part = await store.upload_part(
            bucket, key, upload.upload_id, number, body(data), checksum_algorithm=algorithm
        )
        listed = {algorithm: part.checksum or ""} if algorithm else {}
        parts.append(CompletedPart(number, part.etag, listed))
    return upload.upload_id, parts


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
async def test_composite_multipart_checksum_is_the_checksum_of_the_part_checksums(
    objects: ObjectBackend, bucket: str, algorithm: str
) -> None:
    skip_moto_crc32c(objects, algorithm)
    upload_id, parts = await two_part_upload(objects, bucket, "k", algorithm)
    raw = b"".join(base64.b64decode(checksum_of(algorithm, d)) for d in (FIRST_PART, LAST_PART))
    expected = f"{checksum_of(algorithm, raw)}-2"
    info = await objects.complete_multipart_upload(
        bucket, "k", upload_id, parts, checksum=(algorithm, expected)
    )
    assert info.checksums == {algorithm: expected}
    assert (await objects.head_object(bucket, "k")).checksums == {algorithm: expected}


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
async def test_full_object_multipart_checksum_is_the_crc_of_the_whole_object(
    objects: ObjectBackend, bucket: str, algorithm: str
) -> None:
    skip_moto_crc32c(objects, algorithm)
    upload_id, parts = await two_part_upload(objects, bucket, "k", algorithm, "FULL_OBJECT")
    expected = checksum_of(algorithm, FIRST_PART + LAST_PART)
    info = await objects.complete_multipart_upload(
        bucket, "k", upload_id, parts, checksum=(algorithm, expected)
    )
    assert info.checksums == {algorithm: expected}


async def test_wrong_whole_object_checksum_is_bad_digest(
    objects: ObjectBackend, bucket: str
) -> None:
    upload_id, parts = await two_part_upload(objects, bucket, "k", "SHA256")
    wrong = ("SHA256", base64.b64encode(hashlib.sha256(b"other").digest()).decode() + "-2")
    code = await error_code(
        objects.complete_multipart_upload(bucket, "k", upload_id, parts, checksum=wrong)
    )
    assert code == "BadDigest"
    assert await error_code(objects.head_object(bucket, "k")) == "NoSuchKey"


async def test_listed_part_checksum_must_be_the_uploaded_one(
    objects: ObjectBackend, bucket: str
) -> None:
    if on_moto(objects):
        pytest.skip("moto keeps no part checksums to compare with (AWS S3 checks them)")
    upload_id, parts = await two_part_upload(objects, bucket, "k", "CRC32")
    parts[1].checksums["CRC32"] = checksum_of("CRC32", b"something else")
    code = await error_code(objects.complete_multipart_upload(bucket, "k", upload_id, parts))
    assert code == "InvalidPart"


async def test_completing_an_upload_again_answers_the_same_object(
    objects: ObjectBackend, bucket: str
) -> None:
    upload_id, parts = await two_part_upload(objects, bucket, "k", None)
    first = await objects.complete_multipart_upload(bucket, "k", upload_id, parts)
    again = await objects.complete_multipart_upload(bucket, "k", upload_id, parts)
    assert (again.etag, again.size) == (first.etag, first.size)


async def test_completing_again_with_other_parts_is_no_such_upload(
    objects: ObjectBackend, bucket: str
) -> None:
    upload_id, parts = await two_part_upload(objects, bucket, "k", None)
    await objects.complete_multipart_upload(bucket, "k", upload_id, parts)
    code = await error_code(objects.complete_multipart_upload(bucket, "k", upload_id, parts[:1]))
    assert code == "NoSuchUpload"


async def test_a_part_listed_twice_counts_once(objects: ObjectBackend, bucket: str) -> None:
    upload_id, parts = await two_part_upload(objects, bucket, "k", None)
    info = await objects.complete_multipart_upload(
        bucket, "k", upload_id, [parts[0], parts[0], parts[1]]
    )
    assert info.etag == multipart_etag([parts[0].etag, parts[1].etag])
    assert await get_bytes(objects, bucket, "k") == FIRST_PART + LAST_PART


async def test_object_parts_give_each_part_size(objects: ObjectBackend, bucket: str) -> None:
    upload_id, parts = await two_part_upload(objects, bucket, "k", None)
    await objects.complete_multipart_upload(bucket, "k", upload_id, parts)
    listed = await objects.object_parts(bucket, "k")
    assert [(p.part_number, p.size) for p in listed or []] == [
        (1, len(FIRST_PART)),
        (2, len(LAST_PART)),
    ]
    await objects.put_object(bucket, "whole", body(b"x"))
    assert await objects.object_parts(bucket, "whole") is None


# ------------------------------------------------------------------ listing edge cases


async def test_listing_zero_keys_is_empty_and_not_truncated(
    objects: ObjectBackend, bucket: str
) -> None:
    await put_keys(objects, bucket, ["a", "b"])
    page = await objects.list_objects(bucket, max_keys=0)
    assert (page.objects, page.common_prefixes, page.truncated) == ([], [], False)


# ------------------------------------------------------------------ conditional writes


async def test_if_none_match_star_creates_only_when_absent(
    objects: ObjectBackend, bucket: str
) -> None:
    absent = WriteCondition(if_none_match="*")
    await objects.put_object(bucket, "k", body(b"first"), condition=absent)
    code = await error_code(objects.put_object(bucket, "k", body(b"second"), condition=absent))
    assert code == "PreconditionFailed"
    assert await get_bytes(objects, bucket, "k") == b"first"


async def test_if_match_overwrites_only_that_version(objects: ObjectBackend, bucket: str) -> None:
    info = await objects.put_object(bucket, "k", body(b"v1"))
    stale = WriteCondition(if_match='"0123456789abcdef0123456789abcdef"')
    assert await error_code(objects.put_object(bucket, "k", body(b"x"), condition=stale)) == (
        "PreconditionFailed"
    )
    current = WriteCondition(if_match=f'"{info.etag}"')
    await objects.put_object(bucket, "k", body(b"v2"), condition=current)
    assert await get_bytes(objects, bucket, "k") == b"v2"
    code = await error_code(objects.put_object(bucket, "absent", body(b"x"), condition=current))
    assert code == "NoSuchKey"


async def test_complete_with_if_none_match_does_not_overwrite(
    objects: ObjectBackend, bucket: str
) -> None:
    await objects.put_object(bucket, "k", body(b"there"))
    upload_id, parts = await two_part_upload(objects, bucket, "k", None)
    code = await error_code(
        objects.complete_multipart_upload(
            bucket, "k", upload_id, parts, condition=WriteCondition(if_none_match="*")
        )
    )
    assert code == "PreconditionFailed"
    assert await get_bytes(objects, bucket, "k") == b"there"


async def test_delete_with_if_match_deletes_only_that_version(
    objects: ObjectBackend, bucket: str
) -> None:
    info = await objects.put_object(bucket, "k", body(b"v1"))
    stale = WriteCondition(if_match='"0123456789abcdef0123456789abcdef"')
    assert await error_code(objects.delete_object(bucket, "k", stale)) == "PreconditionFailed"
    assert await get_bytes(objects, bucket, "k") == b"v1"
    await objects.delete_object(bucket, "k", WriteCondition(if_match=f'"{info.etag}"'))
    assert await error_code(objects.head_object(bucket, "k")) == "NoSuchKey"
    code = await error_code(objects.delete_object(bucket, "k", WriteCondition(if_match="*")))
    assert code == "NoSuchKey"


# ------------------------------------------------------------------ SSE-S3


async def test_sse_s3_object_reads_back_and_reports_its_encryption(
    objects: ObjectBackend, bucket: str
) -> None:
    data = os.urandom(300_000)
    info = await objects.put_object(bucket, "k", body(data), encryption="AES256")
    assert info.encryption == "AES256"
    assert (await objects.head_object(bucket, "k")).encryption == "AES256"
    assert await get_bytes(objects, bucket, "k") == data
    _, stream = await objects.get_object(bucket, "k", (70_001, 200_000))
    assert await read_all(stream) == data[70_001:200_001]


async def test_copy_is_encrypted_as_the_copy_request_says(
    objects: ObjectBackend, bucket: str
) -> None:
    await objects.put_object(bucket, "plain", body(b"p" * 1000))
    await objects.put_object(bucket, "sealed", body(b"s" * 1000), encryption="AES256")
    for source, target, encryption in (
        ("plain", "plain-to-sealed", "AES256"),
        ("sealed", "sealed-to-plain", None),
        ("sealed", "sealed-to-sealed", "AES256"),
    ):
        await objects.copy_object(bucket, source, bucket, target, encryption=encryption)
        assert (await objects.head_object(bucket, target)).encryption == encryption
        assert await get_bytes(objects, bucket, target) == await get_bytes(objects, bucket, source)


async def test_sse_s3_multipart_upload_reads_back(objects: ObjectBackend, bucket: str) -> None:
    upload = await objects.create_multipart_upload(bucket, "k", encryption="AES256")
    p1 = await objects.upload_part(bucket, "k", upload.upload_id, 1, body(FIRST_PART))
    p2 = await objects.upload_part(bucket, "k", upload.upload_id, 2, body(LAST_PART))
    info = await objects.complete_multipart_upload(
        bucket, "k", upload.upload_id, [(1, p1.etag), (2, p2.etag)]
    )
    assert info.encryption == "AES256"
    _, stream = await objects.get_object(bucket, "k", (5 * MIB - 3, 5 * MIB + 3))
    assert await read_all(stream) == (FIRST_PART + LAST_PART)[5 * MIB - 3 : 5 * MIB + 4]


# ------------------------------------------------------------------ tagging


async def test_tags_set_on_put_are_read_back(objects: ObjectBackend, bucket: str) -> None:
    await objects.put_object(bucket, "k", body(b"x"), tags={"team": "a", "stage": "raw"})
    assert await objects.get_object_tagging(bucket, "k") == {"team": "a", "stage": "raw"}
    info, stream = await objects.get_object(bucket, "k")
    await read_all(stream)
    assert info.tag_count == 2


async def test_put_object_tagging_replaces_and_delete_clears(
    objects: ObjectBackend, bucket: str
) -> None:
    await objects.put_object(bucket, "k", body(b"x"), tags={"old": "1"})
    await objects.put_object_tagging(bucket, "k", {"new": "2"})
    assert await objects.get_object_tagging(bucket, "k") == {"new": "2"}
    await objects.delete_object_tagging(bucket, "k")
    assert await objects.get_object_tagging(bucket, "k") == {}
    code = await error_code(objects.put_object_tagging(bucket, "absent", {"a": "b"}))
    assert code == "NoSuchKey"


async def test_more_than_ten_tags_is_invalid_tag(objects: ObjectBackend, bucket: str) -> None:
    await objects.put_object(bucket, "k", body(b"x"))
    eleven = {f"k{i}": "v" for i in range(11)}
    assert await error_code(objects.put_object_tagging(bucket, "k", eleven)) == "InvalidTag"


async def test_copy_keeps_tags_unless_given_new_ones(objects: ObjectBackend, bucket: str) -> None:
    await objects.put_object(bucket, "src", body(b"x"), tags={"a": "1"})
    await objects.copy_object(bucket, "src", bucket, "kept")
    await objects.copy_object(bucket, "src", bucket, "replaced", tags={"b": "2"})
    assert await objects.get_object_tagging(bucket, "kept") == {"a": "1"}
    assert await objects.get_object_tagging(bucket, "replaced") == {"b": "2"}


async def test_multipart_upload_tags_land_on_the_object(
    objects: ObjectBackend, bucket: str
) -> None:
    upload = await objects.create_multipart_upload(bucket, "k", tags={"from": "mpu"})
    part = await objects.upload_part(bucket, "k", upload.upload_id, 1, body(b"x"))
    await objects.complete_multipart_upload(bucket, "k", upload.upload_id, [(1, part.etag)])
    assert await objects.get_object_tagging(bucket, "k") == {"from": "mpu"}


# ------------------------------------------------------------------ bucket CORS


async def test_bucket_cors_rules_round_trip_and_delete(objects: ObjectBackend, bucket: str) -> None:
    assert await error_code(objects.get_bucket_cors(bucket)) == "NoSuchCORSConfiguration"
    rules = [
        CorsRule(
            allowed_methods=["GET", "PUT"],
            allowed_origins=["https://app.example.com"],
            allowed_headers=["*"],
            expose_headers=["ETag"],
            max_age_seconds=300,
            id="app",
        )
    ]
    await objects.put_bucket_cors(bucket, rules)
    assert await objects.get_bucket_cors(bucket) == rules
    await objects.delete_bucket_cors(bucket)
    assert await error_code(objects.get_bucket_cors(bucket)) == "NoSuchCORSConfiguration"


# ------------------------------------------------------------------ helpers


def test_parse_s3_uri_splits_bucket_and_key() -> None:
    assert parse_s3_uri("s3://bucket/a/b/c.out") == ("bucket", "a/b/c.out")


@pytest.mark.parametrize("uri", ["s3://bucket", "s3://bucket/", "https://b/k", "s3:///k", ""])
def test_parse_s3_uri_refuses_non_object_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_s3_uri(uri)
