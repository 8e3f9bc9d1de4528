"""Crashes inside the local object store, at its fault points (sagequeue.faults.POINTS):
between a body's rename and its index commit, between the commit and the unlink of the
body it replaced, and inside CompleteMultipartUpload. After a restart nothing
acknowledged is lost, an unacknowledged write is there whole or not at all, a multipart
upload killed mid-completion completes on the client's retry, and no file is left that
the index does not know (nor an index row without its file)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError

from acceptance.helpers import deploy
from figures import scaled

from .conftest import (
    FAULTS,
    Backend,
    Load,
    StoreReader,
    client,
    local_store_audit,
    settle,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MIB = 1024 * 1024


def objects_root(server) -> Path:
    return server.data_dir / "objects"


def crash_then_restart(cluster, name: str = "all") -> None:
    wait_until(lambda: cluster.crashed(name), "the fault point reached", 60)
    cluster.crashes += 1
    cluster.restart(name)


def test_a_crash_between_an_outputs_rename_and_its_commit_loses_nothing(
    cluster_factory, figures
) -> None:
    total = scaled(150)
    cluster = cluster_factory(Backend("sqlite"))
    # Pass 1 is the model archive's upload; the crash comes at an output in the load.
    server = cluster.add("all", env={FAULTS: f"local-store-after-rename@{total // 4}"})
    deploy(server, "fault-rename", bucket="fault-rename", instances=1, concurrency=4)
    StoreReader(cluster).install_audit()
    load = Load(server, "fault-rename", total).run({1: lambda: crash_then_restart(cluster)})
    outcome = settle(cluster, load.accepted, "fault-rename", "fault-rename")
    orphans, dangling = local_store_audit(objects_root(server))
    figures.record(
        "fault",
        "local-store-after-rename, under load (sqlite)",
        point="local-store-after-rename",
        backend="sqlite",
        requests=total,
        accepted=outcome.accepted,
        crashes=cluster.crashes,
        lost=outcome.lost,
        duplicates=outcome.duplicates,
        rerun=outcome.rerun,
        orphans=len(orphans),
        dangling=len(dangling),
        server_errors=load.server_errors,
    )
    assert cluster.crashes == 1
    assert outcome.problems == []
    assert outcome.by_status == {"Completed": len(load.accepted)}
    assert (orphans, dangling) == (set(), set())


# PutObject of new keys, overwrites, then deletes: each point is reached at one of them.
OPERATIONS = (
    [("put", f"key-{n}", f"first-{n}") for n in range(12)]
    + [("put", f"key-{n}", f"second-{n}") for n in range(6)]
    + [("delete", f"key-{n}", None) for n in range(6, 10)]
)


@pytest.mark.parametrize(
    ("point", "nth"),
    [
        ("local-store-after-rename", 14),  # the second overwrite
        ("local-store-after-commit", 3),  # the third overwrite
        ("local-store-after-commit", 8),  # the second delete
    ],
    ids=["rename-overwrite", "commit-overwrite", "commit-delete"],
)
def test_s3_writes_cut_by_a_crash_keep_every_acknowledged_object(
    cluster_factory, point: str, nth: int, figures
) -> None:
    cluster = cluster_factory(Backend("sqlite"))
    server = cluster.add("all", env={FAULTS: f"{point}@{nth}"})
    s3 = client(server, "s3")
    s3.create_bucket(Bucket="objects")
    acknowledged: dict[str, str | None] = {}
    in_flight: tuple[str, str | None] | None = None
    for operation, key, body in OPERATIONS:
        try:
            if operation == "put":
                s3.put_object(Bucket="objects", Key=key, Body=body.encode())
            else:
                s3.delete_object(Bucket="objects", Key=key)
        except BotoCoreError:
            in_flight = (key, body)
            break
        acknowledged[key] = body
    assert in_flight is not None, "the fault point was not reached"
    crash_then_restart(cluster)
    s3 = client(server, "s3")
    for key, body in acknowledged.items():
        if key == in_flight[0]:
            continue
        assert read_or_none(s3, key) == body, key
    # The write the crash cut: all of it or none of it.
    assert read_or_none(s3, in_flight[0]) in (acknowledged.get(in_flight[0]), in_flight[1])
    orphans, dangling = local_store_audit(objects_root(server))
    figures.record(
        "fault",
        f"{point}, S3 {'DeleteObject' if in_flight[1] is None else 'PutObject'} (sqlite)",
        point=point,
        backend="sqlite",
        requests=len(acknowledged) + 1,
        accepted=len(acknowledged),
        crashes=cluster.crashes,
        lost=0,
        duplicates=0,
        orphans=len(orphans),
        dangling=len(dangling),
        server_errors=0,
    )
    assert (orphans, dangling) == (set(), set())


def read_or_none(s3, key: str) -> str | None:
    try:
        return s3.get_object(Bucket="objects", Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        return None


@pytest.mark.parametrize(
    "point",
    [
        "complete-multipart-after-concatenate",
        "complete-multipart-after-rename",
        "complete-multipart-after-commit",
    ],
)
def test_a_multipart_upload_killed_mid_completion_completes_on_the_retry(
    cluster_factory, point: str, figures
) -> None:
    cluster = cluster_factory(Backend("sqlite"))
    server = cluster.add("all", env={FAULTS: point})
    s3 = client(server, "s3")
    s3.create_bucket(Bucket="uploads")
    s3.put_object(Bucket="uploads", Key="before", Body=b"acknowledged earlier")
    parts_data = [b"a" * (5 * MIB), b"b" * 1024]
    upload = s3.create_multipart_upload(Bucket="uploads", Key="big")
    parts = [
        {
            "PartNumber": number,
            "ETag": s3.upload_part(
                Bucket="uploads",
                Key="big",
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data,
            )["ETag"],
        }
        for number, data in enumerate(parts_data, start=1)
    ]

    def complete() -> dict:
        return s3.complete_multipart_upload(
            Bucket="uploads",
            Key="big",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )

    with pytest.raises(BotoCoreError):
        complete()  # the server dies inside it
    crash_then_restart(cluster)
    s3 = client(server, "s3")
    completed = complete()  # the client's retry
    expected_etag = multipart_etag(parts_data)
    assert completed["ETag"] == expected_etag
    got = s3.get_object(Bucket="uploads", Key="big")
    assert (got["ETag"], got["Body"].read()) == (expected_etag, b"".join(parts_data))
    assert s3.get_object(Bucket="uploads", Key="before")["Body"].read() == b"acknowledged earlier"
    assert s3.list_multipart_uploads(Bucket="uploads").get("Uploads", []) == []
    orphans, dangling = local_store_audit(objects_root(server))
    figures.record(
        "fault",
        f"{point} (sqlite)",
        point=point,
        backend="sqlite",
        requests=5,
        accepted=4,
        crashes=cluster.crashes,
        lost=0,
        duplicates=0,
        orphans=len(orphans),
        dangling=len(dangling),
        server_errors=0,
    )
    assert (orphans, dangling) == (set(), set())


def multipart_etag(parts: list[bytes]) -> str:
    digests = b"".join(hashlib.md5(part).digest() for part in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'
