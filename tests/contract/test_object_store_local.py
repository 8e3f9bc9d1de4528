"""Local-disk object store safety: opaque keys, atomic writes, crash leftovers; and its
kernel-side copies (CompleteMultipartUpload, CopyObject) falling back to a buffer."""

from __future__ import annotations

import errno
import os
import subprocess
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sagequeue.domain.errors import S3Error
from sagequeue.stores.objects import WriteCondition
from sagequeue.stores.objects_local import LocalObjectStore

pytestmark = pytest.mark.anyio

HOSTILE_KEYS = [
    "../../../../etc/passwd",
    "/absolute/path",
    "a/../../b",
    "nul\x00byte",
    "k" * 1024,
    "/".join(["x" * 200] * 5),
    "Case",
    "case",
    unicodedata.normalize("NFC", "café"),
    unicodedata.normalize("NFD", "café"),
    ".",
    "..",
    "con",
    "trailing/",
    "back\\slash",
    "new\nline",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalObjectStore]:
    store = LocalObjectStore(tmp_path / "root")
    await store.open()
    await store.create_bucket("bucket")
    yield store
    await store.close()


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def read(store: LocalObjectStore, key: str) -> bytes:
    _, stream = await store.get_object("bucket", key)
    return b"".join([chunk async for chunk in stream])


async def test_hostile_keys_stay_distinct_objects(local: LocalObjectStore) -> None:
    for index, key in enumerate(HOSTILE_KEYS):
        await local.put_object("bucket", key, body(str(index).encode()))
    for index, key in enumerate(HOSTILE_KEYS):
        assert await read(local, key) == str(index).encode()
    listed = [o.key for o in (await local.list_objects("bucket")).objects]
    assert sorted(listed) == sorted(HOSTILE_KEYS)


async def test_hostile_keys_write_nothing_outside_the_root(
    local: LocalObjectStore, tmp_path: Path
) -> None:
    for key in HOSTILE_KEYS:
        await local.put_object("bucket", key, body(b"x"))
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "root")]
    assert outside == []
    top_level = sorted(p.name for p in (tmp_path / "root").iterdir())
    assert [n for n in top_level if not n.startswith("index.db")] == [
        "data",
        "index.lock",
        "parts",
        "reserve",
        "tmp",
    ]


async def test_no_file_name_contains_the_key(local: LocalObjectStore, tmp_path: Path) -> None:
    await local.put_object("bucket", "secret-name", body(b"x"))
    names = [p.name for p in (tmp_path / "root").rglob("*")]
    assert not any("secret-name" in name for name in names)


async def test_interrupted_write_leaves_the_old_object(local: LocalObjectStore) -> None:
    await local.put_object("bucket", "k", body(b"old"))

    async def dies_midway() -> AsyncIterator[bytes]:
        yield b"new-but-"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await local.put_object("bucket", "k", dies_midway())
    assert await read(local, "k") == b"old"
    assert list((local.root / "tmp").iterdir()) == []


async def test_crash_leftover_temp_file_is_not_an_object(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root)
    await store.open()
    await store.create_bucket("bucket")
    await store.put_object("bucket", "k", body(b"committed"))
    await store.close()
    # A process killed mid-write leaves a temp file behind (and nothing in the index).
    (root / "tmp" / "deadbeef").write_bytes(b"torn")
    reopened = LocalObjectStore(root)
    await reopened.open()
    try:
        assert [o.key for o in (await reopened.list_objects("bucket")).objects] == ["k"]
        assert await read(reopened, "k") == b"committed"
    finally:
        await reopened.close()


def files_under(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for area in ("data", "parts", "tmp")
        for p in (root / area).rglob("*")
        if p.is_file()
    }


async def leave_crash_leftovers(root: Path) -> tuple[set[str], set[str]]:
    """A store with an object and an upload's part, closed; then the files a crash can
    leave: a temp file, a renamed but uncommitted body and part. Returns (the files the
    index refers to, the leftovers)."""
    store = LocalObjectStore(root)
    await store.open()
    await store.create_bucket("bucket")
    await store.put_object("bucket", "k", body(b"committed"))
    upload = await store.create_multipart_upload("bucket", "big")
    await store.upload_part("bucket", "big", upload.upload_id, 1, body(b"part"))
    await store.close()
    referenced = files_under(root)
    leftovers = {"tmp/0123abcd", "data/ab/ab0123456789", "parts/cd/cd0123456789"}
    for relative in leftovers:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"torn")
    return referenced, leftovers


async def test_opening_the_store_alone_sweeps_every_crash_leftover(tmp_path: Path) -> None:
    root = tmp_path / "root"
    referenced, _ = await leave_crash_leftovers(root)
    reopened = LocalObjectStore(root)
    await reopened.open()
    try:
        assert files_under(root) == referenced
        assert await read(reopened, "k") == b"committed"
        assert [
            p.part_number
            for p in await reopened.list_parts(
                "bucket", "big", (await reopened.list_multipart_uploads("bucket"))[0].upload_id
            )
        ] == [1]
    finally:
        await reopened.close()


async def test_a_store_shared_with_a_running_process_sweeps_only_old_leftovers(
    tmp_path: Path,
) -> None:
    """Another process has the store open: a file it does not know may be that process's
    write between rename and commit, so only files untouched for an hour go."""
    root = tmp_path / "root"
    referenced, leftovers = await leave_crash_leftovers(root)
    old = "data/ab/ab0123456789"
    two_hours_ago = time.time() - 7200
    os.utime(root / old, (two_hours_ago, two_hours_ago))
    running = LocalObjectStore(root)
    await running.open()  # alone: sweeps everything; write the leftovers again
    for relative in leftovers:
        (root / relative).write_bytes(b"torn")
    os.utime(root / old, (two_hours_ago, two_hours_ago))
    starting = LocalObjectStore(root)
    await starting.open()
    try:
        assert files_under(root) == referenced | (leftovers - {old})
    finally:
        await starting.close()
        await running.close()


async def test_overwrite_removes_the_replaced_body_file(local: LocalObjectStore) -> None:
    for version in range(3):
        await local.put_object("bucket", "k", body(b"v%d" % version))
    data_files = [p for p in (local.root / "data").rglob("*") if p.is_file()]
    assert len(data_files) == 1


async def test_reader_of_the_old_version_finishes_after_an_overwrite(
    local: LocalObjectStore,
) -> None:
    await local.put_object("bucket", "k", body(b"A" * 1_000_000))
    _, stream = await local.get_object("bucket", "k")
    first = await anext(stream)
    await local.put_object("bucket", "k", body(b"B" * 10))
    rest = b"".join([chunk async for chunk in stream])
    assert first + rest == b"A" * 1_000_000
    assert await read(local, "k") == b"B" * 10


async def test_objects_survive_reopening_the_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root)
    await store.open()
    await store.create_bucket("bucket")
    await store.put_object("bucket", "k", body(b"kept"), metadata={"a": "b"})
    await store.close()
    again = LocalObjectStore(root)
    await again.open()
    try:
        assert (await again.head_object("bucket", "k")).metadata == {"a": "b"}
        assert await read(again, "k") == b"kept"
    finally:
        await again.close()


def _refuse_kernel_copy(monkeypatch: pytest.MonkeyPatch, error: int) -> list[int]:
    """copy_file_range that copies 1,000 bytes once, then fails with ``error``: a refusal
    means the copy goes on through a buffer from where the kernel stopped."""
    real = os.copy_file_range
    calls: list[int] = []

    def copy_file_range(source: int, target: int, count: int) -> int:
        calls.append(count)
        if len(calls) == 1:
            return real(source, target, 1000)
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    return calls


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="Linux only")
async def test_multipart_completes_through_a_buffer_when_the_kernel_stops_copying(
    local: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = os.urandom(5 * 1024 * 1024), os.urandom(3000)
    upload = await local.create_multipart_upload("bucket", "big")
    p1 = await local.upload_part("bucket", "big", upload.upload_id, 1, body(first))
    p2 = await local.upload_part("bucket", "big", upload.upload_id, 2, body(second))
    calls = _refuse_kernel_copy(monkeypatch, errno.EXDEV)
    await local.complete_multipart_upload(
        "bucket", "big", upload.upload_id, [(1, p1.etag), (2, p2.etag)]
    )
    assert calls, "the kernel copy was not tried"
    assert await read(local, "big") == first + second


async def test_copy_object_copies_through_a_buffer_without_copy_file_range(
    local: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    await local.put_object("bucket", "src", body(data))
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    await local.copy_object("bucket", "src", "bucket", "dst")
    assert await read(local, "dst") == data


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="Linux only")
async def test_a_kernel_copy_failure_other_than_refusal_fails_the_completion(
    local: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = await local.create_multipart_upload("bucket", "big")
    part = await local.upload_part("bucket", "big", upload.upload_id, 1, body(b"x" * 100))
    _refuse_kernel_copy(monkeypatch, errno.EIO)
    with pytest.raises(OSError):
        await local.complete_multipart_upload("bucket", "big", upload.upload_id, [(1, part.etag)])
    monkeypatch.undo()
    tmp_files = list((local.root / "tmp").iterdir())
    assert tmp_files == [], "the half-written object was left behind"
    with pytest.raises(S3Error) as raised:
        await read(local, "big")
    assert raised.value.code == "NoSuchKey"


# ------------------------------------------------------------------ conditional write races


async def test_losing_a_conditional_write_race_is_a_conflict(local: LocalObjectStore) -> None:
    """If-None-Match: * held when the upload began; another write of the key landed
    before it committed: 409 ConditionalRequestConflict, and the winner stays."""

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"loser"
        await local.put_object("bucket", "k", body(b"winner"))

    with pytest.raises(S3Error) as raised:
        await local.put_object(
            "bucket", "k", slow_body(), condition=WriteCondition(if_none_match="*")
        )
    assert (raised.value.code, raised.value.status) == ("ConditionalRequestConflict", 409)
    assert await read(local, "k") == b"winner"


# ------------------------------------------------------------------ SSE-S3 at rest


async def test_sse_s3_body_is_not_stored_in_the_clear(local: LocalObjectStore) -> None:
    secret = b"the secret payload " * 100
    await local.put_object("bucket", "k", body(secret), encryption="AES256")
    stored = [p.read_bytes() for p in (local.root / "data").rglob("*") if p.is_file()]
    assert len(stored) == 1 and len(stored[0]) == len(secret)
    assert b"secret payload" not in stored[0]
    assert await read(local, "k") == secret


async def test_sse_s3_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for attempt in range(2):
        store = LocalObjectStore(root)
        await store.open()
        if attempt == 0:
            await store.create_bucket("bucket")
        await store.put_object("bucket", f"k{attempt}", body(b"data"), encryption="AES256")
        key_file = root / "sse-s3.key"
        if attempt == 0:
            first_key = key_file.read_bytes()
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        assert key_file.read_bytes() == first_key and len(first_key) == 32
        assert await read(store, "k0") == b"data"  # readable by the reopened store too
        await store.close()


# ------------------------------------------------------------------ an index from before


async def test_an_index_from_before_tags_and_sse_opens_and_keeps_its_objects(
    tmp_path: Path,
) -> None:
    import sqlite3

    root = tmp_path / "root"
    (root / "data" / "ab").mkdir(parents=True)
    (root / "data" / "ab" / "abcd").write_bytes(b"old body")
    db = sqlite3.connect(root / "index.db")
    db.executescript(
        """
        CREATE TABLE buckets (name TEXT PRIMARY KEY, created REAL NOT NULL);
        CREATE TABLE objects (
            bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
            last_modified REAL NOT NULL, content_type TEXT, metadata TEXT NOT NULL,
            headers TEXT NOT NULL, checksums TEXT NOT NULL, file TEXT NOT NULL,
            PRIMARY KEY (bucket, key)) WITHOUT ROWID;
        CREATE TABLE uploads (
            upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL,
            initiated REAL NOT NULL, content_type TEXT, metadata TEXT NOT NULL,
            headers TEXT NOT NULL, checksum_algorithm TEXT);
        CREATE TABLE parts (
            upload_id TEXT NOT NULL, part_number INTEGER NOT NULL, size INTEGER NOT NULL,
            etag TEXT NOT NULL, last_modified REAL NOT NULL, checksum TEXT, file TEXT NOT NULL,
            PRIMARY KEY (upload_id, part_number)) WITHOUT ROWID;
        INSERT INTO buckets VALUES ('bucket', 0);
        INSERT INTO objects VALUES
            ('bucket', 'old', 8, 'etag', 0, NULL, '{}', '{}', '{}', 'data/ab/abcd');
        """
    )
    db.close()
    store = LocalObjectStore(root)
    await store.open()
    try:
        assert await read(store, "old") == b"old body"
        assert await store.get_object_tagging("bucket", "old") == {}
        await store.put_object("bucket", "new", body(b"x"), tags={"a": "b"})
        assert await store.get_object_tagging("bucket", "new") == {"a": "b"}
    finally:
        await store.close()


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a file system that fills up for real."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write to ``path`` until the file system is full."""
    with path.open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


async def test_deleting_works_on_a_full_disk_and_frees_space(small_disk: Path) -> None:
    store = LocalObjectStore(small_disk / "objects")
    await store.open()
    try:
        await store.create_bucket("bucket")
        await store.put_object("bucket", "empty", body(b""))
        for index in range(3):
            await store.put_object("bucket", f"k{index}", body(os.urandom(100_000)))
        fill(small_disk / "filler")  # something else filled the disk
        with pytest.raises(S3Error) as raised:
            await store.put_object("bucket", "more", body(os.urandom(100_000)))
        assert (raised.value.code, raised.value.status) == ("InsufficientStorage", 507)
        # The index has no room for its own journal now: the reserve gives a delete room
        # to commit, even of an object that frees nothing.
        await store.delete_object("bucket", "empty")
        for index in range(3):
            await store.delete_object("bucket", f"k{index}")
        assert (await store.list_objects("bucket")).objects == []
        await store.put_object("bucket", "after", body(os.urandom(50_000)))
        assert await read(store, "after") is not None
    finally:
        await store.close()
