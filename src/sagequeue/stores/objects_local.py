"""Local-disk object store.

Layout under the root::

    index.db            SQLite (WAL): buckets, objects, uploads, parts
    index.lock          flock()ed shared by every process that has the store open
                        (exclusively while one sweeps crash leftovers at start)
    data/<xx>/<uuid>    object bodies, one immutable file per written version
    parts/<uuid>        multipart parts until completed
    tmp/<uuid>          writes in progress
    reserve             a small preallocated file, given up so that deletes can
                        commit when the disk is full
    sse-s3.key          the SSE-S3 server key (mode 0600), made by the first
                        encrypted write (see sse_s3.py)

Keys never become paths: a body's file name is a random UUID and the key lives only in
the index, so `..`, absolute keys, NUL, 1024-byte keys, case or Unicode normalisation
variants cannot escape the root or collide. A write goes to tmp/, is fsynced, renamed
into data/ (directory fsynced), and only then does one SQLite transaction point the key
at it, together with its metadata: the commit is the atomic switch, so a reader sees the
old object or the new one with its own metadata. Files are removed only after the commit
that stops referencing them, so an index row never lacks its file, and a crash leaves at
worst files the index does not know: a temp file, a body renamed but not committed, a
replaced body or completed parts not yet unlinked. Opening the store sweeps them (see
``_sweep_orphans_sync``). Keys are TEXT compared with SQLite's BINARY collation (memcmp of
UTF-8), which is S3's listing order, and listing walks the primary-key index.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from sagequeue import faults
from sagequeue.domain.errors import S3Error
from sagequeue.ports import ObjectInfo
from sagequeue.stores.objects import (
    MAX_PART_NUMBER,
    MAX_SINGLE_PUT,
    MIN_PART_SIZE,
    READ_CHUNK,
    BucketInfo,
    CompletedPart,
    CorsRule,
    ListPage,
    PartInfo,
    StorageFull,
    UploadInfo,
    WriteCondition,
    check_bucket_name,
    check_completion_checksum,
    check_completion_checksum_type,
    check_encryption,
    check_key,
    check_listed_part_checksum,
    checksum_type_for,
    combined_checksum,
    completed_before,
    entity_too_small,
    invalid_part,
    multipart_etag,
    new_checksum,
    no_such_bucket,
    no_such_cors,
    no_such_key,
    no_such_upload,
    object_size_mismatch,
    spool_body,
    storage_full,
    validate_part_list,
    validate_tags,
)
from sagequeue.stores.sse_s3 import KEY_FILE, SSE_S3, ObjectKey, ServerKey

T = TypeVar("T")

log = logging.getLogger("sagequeue.objects")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    last_modified REAL NOT NULL, content_type TEXT, metadata TEXT NOT NULL,
    headers TEXT NOT NULL, checksums TEXT NOT NULL, file TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL,
    initiated REAL NOT NULL, content_type TEXT, metadata TEXT NOT NULL,
    headers TEXT NOT NULL, checksum_algorithm TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_bucket ON uploads (bucket, key);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL, part_number INTEGER NOT NULL, size INTEGER NOT NULL,
    etag TEXT NOT NULL, last_modified REAL NOT NULL, checksum TEXT, file TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bucket_cors (bucket TEXT PRIMARY KEY, rules TEXT NOT NULL);
-- The start-up sweep asks, for each file on disk, whether a row refers to it.
CREATE INDEX IF NOT EXISTS objects_by_file ON objects (file);
CREATE INDEX IF NOT EXISTS parts_by_file ON parts (file);
"""
# Columns added after the first release: (table, column, declaration), added to an
# older index when it is opened.
_ADDED_COLUMNS = (
    ("objects", "tags", "TEXT NOT NULL DEFAULT '{}'"),
    ("objects", "sse", "TEXT"),  # the sealed data key of an SSE-S3 body
    ("objects", "parts", "TEXT"),  # JSON [[number, size, checksum], ...] of a multipart
    ("uploads", "tags", "TEXT NOT NULL DEFAULT '{}'"),
    ("uploads", "sse", "TEXT"),  # "AES256" when the object is to be encrypted
    ("uploads", "checksum_type", "TEXT"),
    ("parts", "checksum_algorithm", "TEXT"),
    ("parts", "sse", "TEXT"),
)

_OBJECT_COLUMNS = (
    "bucket, key, size, etag, last_modified, content_type, metadata, headers, checksums, "
    "file, tags, sse, parts"
)
_UPLOAD_COLUMNS = (
    "upload_id, bucket, key, initiated, content_type, metadata, headers, checksum_algorithm, "
    "tags, sse, checksum_type"
)
_PART_COLUMNS = "part_number, size, etag, last_modified, checksum, file, checksum_algorithm, sse"
_RESERVE_BYTES = 512 * 1024
_WRITE_BUFFER = 1024 * 1024
# When other processes have the store open too, a file the index does not know may be
# one of their writes between its rename and its commit: only files untouched for this
# long are crash leftovers then. (A process that opens the store alone sweeps them all.)
_ORPHAN_GRACE_SECONDS = 3600.0
_LIST_BATCH = 1000


# Errors with which copy_file_range says "not between these two files", not "failed".
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF}
)
_KERNEL_COPY_CHUNK = 64 * 1024 * 1024


def _copy_file(source_fd: int, target_fd: int) -> None:
    """Copy the rest of ``source_fd`` to ``target_fd`` from their current offsets. The
    kernel copies where it can (``copy_file_range``): completing a 512 MiB multipart
    upload, measured on its own, took 1.5 s (1.2 s of CPU) through a user-space buffer
    and 0.5 s (0.2 s of CPU) in the kernel. Elsewhere (another OS, file system, or a
    kernel that refuses) it goes through a buffer, from wherever the kernel stopped."""
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            while copy_file_range(source_fd, target_fd, _KERNEL_COPY_CHUNK):
                pass
            return
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
    while chunk := os.read(source_fd, _WRITE_BUFFER):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target_fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_successor(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix + "\U0010ffff"
    nxt = last + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored: jump over them
        nxt = 0xE000
    return prefix[:-1] + chr(nxt)


class _Written:
    """A body streamed to a temp file: its path, size, MD5 and optional checksum, and
    the sealed data key when it was written encrypted."""

    def __init__(
        self, path: Path, size: int, md5: str, checksum: str | None, sealed: str | None
    ) -> None:
        self.path = path
        self.size = size
        self.md5 = md5
        self.checksum = checksum
        self.sealed = sealed


class _Row:
    """What the index keeps about an object beyond its ObjectInfo."""

    def __init__(
        self,
        file: str,
        tags: dict[str, str] | None = None,
        sealed: str | None = None,
        parts: list[list[Any]] | None = None,
    ) -> None:
        self.file = file
        self.tags = tags or {}
        self.sealed = sealed
        self.parts = parts


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "disk is full" in str(exc)
        )
    if isinstance(exc, StorageFull):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._db: sqlite3.Connection | None = None
        # One thread owns the SQLite connection: statements are short, and this keeps
        # every transaction serial without a lock dance on the event loop.
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="objects-db")
        self._server_key: ServerKey | None = None
        self._reserve_released = False
        self._key_lock = threading.Lock()
        self._lock_fd: int | None = None

    # ---------------------------------------------------------------- life cycle
    async def open(self) -> None:
        await self._in_db(self._open_sync)

    def _open_sync(self) -> None:
        for sub in ("data", "parts", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.root / "index.db", timeout=30, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self._db = db
        self._lock_and_sweep()
        self._make_reserve()

    def _lock_and_sweep(self) -> None:
        """Take the store's shared lock, sweeping crash leftovers first: all of them when
        this process can lock it exclusively (no other has the store open, so nothing
        is in flight), else only those older than the grace period."""
        self._lock_fd = os.open(self.root / "index.lock", os.O_RDWR | os.O_CREAT, 0o600)
        locking = True
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        except OSError:  # a file system without flock: never assume being alone
            alone = locking = False
        cutoff = time.time() if alone else time.time() - _ORPHAN_GRACE_SECONDS
        try:
            swept = self._sweep_orphans_sync(cutoff, check_age=not alone)
        finally:
            # Stay a sharer for as long as the store is open (a process starting while
            # another sweeps waits here until the sweep is done).
            if locking:
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        if swept:
            log.warning(
                "object store %s: removed %d file(s) a crash left behind (not in the index)",
                self.root,
                swept,
            )

    def _sweep_orphans_sync(self, cutoff: float, *, check_age: bool) -> int:
        """Remove files under tmp/, data/ and parts/ that no index row refers to and
        that were last written before ``cutoff``; returns how many. A body is written
        before its row is committed and unlinked only after the row stops referring to
        it, so a file without a row is a write that never committed or a replaced file
        whose unlink a crash cut off."""
        removed = 0

        def old_enough(path: Path) -> bool:
            if not check_age:
                return True
            try:
                return path.stat().st_mtime < cutoff
            except FileNotFoundError:
                return False

        def remove(path: Path) -> None:
            nonlocal removed
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass

        for entry in (self.root / "tmp").iterdir():
            if entry.is_file() and old_enough(entry):
                remove(entry)
        for area, table in (("data", "objects"), ("parts", "parts")):
            query = f"SELECT 1 FROM {table} WHERE file = ? LIMIT 1"
            for directory in (self.root / area).iterdir():
                if not directory.is_dir():
                    continue
                for entry in directory.iterdir():
                    relative = f"{area}/{directory.name}/{entry.name}"
                    if self.db.execute(query, (relative,)).fetchone() is None and old_enough(entry):
                        remove(entry)
        return removed

    async def close(self) -> None:
        if self._db is not None:
            await self._in_db(self._db.close)
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the shared lock
            self._lock_fd = None
        self._db_thread.shutdown(wait=False)

    async def _in_db(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._db_thread, function, *args
            )
        except (sqlite3.OperationalError, OSError) as exc:
            if _is_disk_full(exc):
                raise storage_full() from exc
            raise

    @staticmethod
    async def _on_disk(function: Callable[..., T], *args: Any) -> T:
        """A file-system call in a worker thread; a full disk becomes S3's error."""
        try:
            return await asyncio.to_thread(function, *args)
        except OSError as exc:
            if _is_disk_full(exc):
                raise storage_full() from exc
            raise

    # ---------------------------------------------------------------- full disk
    def _make_reserve(self) -> None:
        """Preallocate the reserve file, when there is room for it."""
        path = self.root / "reserve"
        if path.exists():
            return
        temp = self.root / "tmp" / f"reserve-{uuid.uuid4().hex}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, _RESERVE_BYTES)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except (OSError, AttributeError):
            temp.unlink(missing_ok=True)

    def _release_reserve(self) -> bool:
        """Give the reserve's space back (a delete needs a little room to commit)."""
        try:
            (self.root / "reserve").unlink()
        except FileNotFoundError:
            return False
        self._reserve_released = True
        return True

    async def _freeing(self, function: Callable[[], T]) -> T:
        """Run an index transaction that frees space; on a full disk, release the
        reserve and try once more, so that space can always be freed."""
        try:
            return await self._in_db(function)
        except S3Error as exc:
            if not _is_disk_full(exc) or not self._release_reserve():
                raise
        return await self._in_db(function)

    # ---------------------------------------------------------------- SSE-S3
    def _key(self) -> ServerKey:
        with self._key_lock:
            if self._server_key is None:
                self._server_key = ServerKey.load_or_create(self.root / KEY_FILE)
            return self._server_key

    def _object_key(self, sealed: str | None) -> ObjectKey | None:
        return self._key().open(sealed) if sealed else None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store not opened"
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE, then COMMIT; ROLLBACK when the block (or the commit) raises."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (a full disk) may have rolled back already.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------- buckets
    async def ensure_bucket(self, name: str) -> None:
        check_bucket_name(name)
        await self._in_db(
            lambda: self.db.execute(
                "INSERT OR IGNORE INTO buckets (name, created) VALUES (?, ?)", (name, time.time())
            )
        )

    async def create_bucket(self, name: str) -> None:
        check_bucket_name(name)

        def create() -> None:
            try:
                self.db.execute(
                    "INSERT INTO buckets (name, created) VALUES (?, ?)", (name, time.time())
                )
            except sqlite3.IntegrityError:
                raise S3Error(
                    "Your previous request to create the named bucket succeeded and you "
                    "already own it.",
                    code="BucketAlreadyOwnedByYou",
                    status=409,
                    extra={"BucketName": name},
                ) from None

        await self._in_db(create)

    async def delete_bucket(self, name: str) -> None:
        def delete() -> list[str]:
            with self._transaction() as db:
                self._require_bucket(name)
                if db.execute("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                    raise S3Error(
                        "The bucket you tried to delete is not empty",
                        code="BucketNotEmpty",
                        status=409,
                        extra={"BucketName": name},
                    )
                files = [
                    row[0]
                    for row in db.execute(
                        "SELECT p.file FROM parts p JOIN uploads u USING (upload_id) "
                        "WHERE u.bucket = ?",
                        (name,),
                    )
                ]
                db.execute(
                    "DELETE FROM parts WHERE upload_id IN "
                    "(SELECT upload_id FROM uploads WHERE bucket = ?)",
                    (name,),
                )
                db.execute("DELETE FROM uploads WHERE bucket = ?", (name,))
                db.execute("DELETE FROM bucket_cors WHERE bucket = ?", (name,))
                db.execute("DELETE FROM buckets WHERE name = ?", (name,))
            return files

        for file in await self._freeing(delete):
            await self._unlink(file)

    async def head_bucket(self, name: str) -> BucketInfo:
        row = await self._in_db(
            lambda: self.db.execute(
                "SELECT name, created FROM buckets WHERE name = ?", (name,)
            ).fetchone()
        )
        if row is None:
            raise no_such_bucket(name)
        return BucketInfo(row[0], row[1])

    async def list_buckets(self) -> list[BucketInfo]:
        rows = await self._in_db(
            lambda: self.db.execute("SELECT name, created FROM buckets ORDER BY name").fetchall()
        )
        return [BucketInfo(name, created) for name, created in rows]

    def _require_bucket(self, name: str) -> None:
        if self.db.execute("SELECT 1 FROM buckets WHERE name = ?", (name,)).fetchone() is None:
            raise no_such_bucket(name)

    # ---------------------------------------------------------------- bucket CORS
    async def get_bucket_cors(self, bucket: str) -> list[CorsRule]:
        def get() -> list[CorsRule]:
            self._require_bucket(bucket)
            row = self.db.execute(
                "SELECT rules FROM bucket_cors WHERE bucket = ?", (bucket,)
            ).fetchone()
            if row is None:
                raise no_such_cors(bucket)
            return msgspec.json.decode(row[0], type=list[CorsRule])

        return await self._in_db(get)

    async def put_bucket_cors(self, bucket: str, rules: list[CorsRule]) -> None:
        encoded = msgspec.json.encode(rules).decode()

        def put() -> None:
            with self._transaction() as db:
                self._require_bucket(bucket)
                db.execute(
                    "INSERT OR REPLACE INTO bucket_cors (bucket, rules) VALUES (?, ?)",
                    (bucket, encoded),
                )

        await self._in_db(put)

    async def delete_bucket_cors(self, bucket: str) -> None:
        def delete() -> None:
            with self._transaction() as db:
                self._require_bucket(bucket)
                db.execute("DELETE FROM bucket_cors WHERE bucket = ?", (bucket,))

        await self._freeing(delete)

    # ---------------------------------------------------------------- writing bodies
    async def _write_temp(
        self,
        body: AsyncIterator[bytes],
        limit: int,
        checksum_algorithm: str | None,
        *,
        encrypt: bool = False,
    ) -> _Written:
        """Stream a body into tmp/, fsynced (encrypted under a new data key when
        ``encrypt``); the caller renames or unlinks it."""
        path = self.root / "tmp" / uuid.uuid4().hex
        sealed: str | None = None
        encryptor: Any = None
        if encrypt:
            object_key, sealed = await asyncio.to_thread(self._new_object_key)
            encryptor = object_key.encryptor()
        handle = await self._on_disk(lambda: path.open("xb"))

        def write(data: bytes) -> None:
            handle.write(encryptor.update(data) if encryptor is not None else data)

        try:
            spooled = await spool_body(
                body, write, limit=limit, checksum_algorithm=checksum_algorithm
            )

            def finish() -> None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()

            await self._on_disk(finish)
        except BaseException as exc:
            handle.close()
            path.unlink(missing_ok=True)
            if _is_disk_full(exc) and not isinstance(exc, StorageFull):
                raise storage_full() from exc
            raise
        return _Written(path, spooled.size, spooled.md5, spooled.checksum, sealed)

    def _new_object_key(self) -> tuple[ObjectKey, str]:
        return self._key().new_object_key()

    def _install_sync(self, temp: Path, area: str) -> str:
        """Rename a finished temp file to its permanent name; returns that name
        relative to the root."""
        name = uuid.uuid4().hex
        relative = f"{area}/{name[:2]}/{name}"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        _fsync_dir(target.parent)
        return relative

    async def _unlink(self, relative: str) -> None:
        await asyncio.to_thread((self.root / relative).unlink, True)

    def _current_etag_sync(self, bucket: str, key: str) -> str | None:
        self._require_bucket(bucket)
        row = self.db.execute(
            "SELECT etag FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
        ).fetchone()
        return row[0] if row else None

    async def _check_condition(
        self, bucket: str, key: str, condition: WriteCondition | None
    ) -> None:
        """The bucket exists, and a conditional write's condition holds now (412)."""
        current = await self._in_db(self._current_etag_sync, bucket, key)
        if condition:
            condition.check(key, current)

    def _commit_object_sync(
        self,
        info: ObjectInfo,
        row: _Row,
        before: Callable[[], None] | None = None,
        condition: WriteCondition | None = None,
    ) -> str | None:
        """Point the key at ``row.file`` (after running ``before`` in the same
        transaction, and when ``condition`` still holds); returns the file it replaced."""
        with self._transaction() as db:
            if before is not None:
                before()
            self._require_bucket(info.bucket)
            old = db.execute(
                "SELECT file, etag FROM objects WHERE bucket = ? AND key = ?",
                (info.bucket, info.key),
            ).fetchone()
            if condition:
                condition.check(info.key, old[1] if old else None, racing=True)
            db.execute(
                f"INSERT OR REPLACE INTO objects ({_OBJECT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.bucket,
                    info.key,
                    info.size,
                    info.etag,
                    info.last_modified,
                    info.content_type,
                    msgspec.json.encode(info.metadata).decode(),
                    msgspec.json.encode(info.headers).decode(),
                    msgspec.json.encode(info.checksums).decode(),
                    row.file,
                    msgspec.json.encode(row.tags).decode(),
                    row.sealed,
                    msgspec.json.encode(row.parts).decode() if row.parts is not None else None,
                ),
            )
        return old[0] if old else None

    async def _commit_object(
        self, info: ObjectInfo, temp: Path, row: _Row, condition: WriteCondition | None = None
    ) -> ObjectInfo:
        try:
            row.file = await self._on_disk(self._install_sync, temp, "data")
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        faults.crash_point("local-store-after-rename")
        try:
            old = await self._in_db(self._commit_object_sync, info, row, None, condition)
        except BaseException:
            await self._unlink(row.file)
            raise
        if old is not None:
            faults.crash_point("local-store-after-commit")
            await self._unlink(old)
        return info

    # ---------------------------------------------------------------- objects
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
        # NoSuchBucket and a failed condition before reading the body.
        await self._check_condition(bucket, key, condition)
        written = await self._write_temp(
            body, MAX_SINGLE_PUT, checksum_algorithm, encrypt=encryption == SSE_S3
        )
        info = ObjectInfo(
            bucket=bucket,
            key=key,
            size=written.size,
            etag=written.md5,
            last_modified=time.time(),
            content_type=content_type,
            metadata=dict(metadata or {}),
            headers=dict(headers or {}),
            checksums={checksum_algorithm.upper(): written.checksum}
            if checksum_algorithm and written.checksum
            else {},
            encryption=encryption,
            tag_count=len(tags),
        )
        return await self._commit_object(
            info, written.path, _Row("", tags, written.sealed), condition
        )

    def _row_sync(self, bucket: str, key: str) -> tuple[ObjectInfo, _Row]:
        row = self.db.execute(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
        ).fetchone()
        if row is None:
            self._require_bucket(bucket)
            raise no_such_key(key)
        parts = msgspec.json.decode(row[12]) if row[12] else None
        return _object_from_row(row), _Row(row[9], msgspec.json.decode(row[10]), row[11], parts)

    async def head_object(self, bucket: str, key: str) -> ObjectInfo:
        info, _ = await self._in_db(self._row_sync, bucket, key)
        return info

    async def _open_current(self, bucket: str, key: str) -> tuple[ObjectInfo, Any, _Row]:
        # A concurrent overwrite may unlink the file between reading the row and
        # opening it: read the row again (the new version is then committed).
        for _ in range(5):
            info, row = await self._in_db(self._row_sync, bucket, key)
            try:
                return info, await asyncio.to_thread((self.root / row.file).open, "rb"), row
            except FileNotFoundError:
                continue
        raise no_such_key(key)

    async def get_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        info, handle, row = await self._open_current(bucket, key)
        start, end = (0, info.size - 1) if byte_range is None else byte_range
        object_key = await asyncio.to_thread(self._object_key, row.sealed) if row.sealed else None
        return info, _FileStream(handle, start, end, object_key)

    async def delete_object(
        self, bucket: str, key: str, condition: WriteCondition | None = None
    ) -> None:
        def delete() -> str | None:
            with self._transaction() as db:
                self._require_bucket(bucket)
                row = db.execute(
                    "SELECT file, etag FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
                ).fetchone()
                if condition:
                    condition.check(key, row[1] if row else None)
                if row is None:
                    return None
                db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
            file: str = row[0]
            return file

        file = await self._freeing(delete)
        if file is not None:
            faults.crash_point("local-store-after-commit")
            await self._unlink(file)
        if self._reserve_released:
            self._reserve_released = False
            await asyncio.to_thread(self._make_reserve)

    async def delete_objects(self, bucket: str, keys: list[str]) -> list[str]:
        await self.head_bucket(bucket)
        for key in keys:
            await self.delete_object(bucket, key)
        return list(keys)

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
        new_tags = validate_tags(list(tags.items())) if tags is not None else None
        await self._check_condition(bucket, key, condition)
        source, handle, source_row = await self._open_current(source_bucket, source_key)
        encrypt = encryption == SSE_S3
        sealed: str | None = None
        decryptor: Any = None
        encryptor: Any = None
        if source_row.sealed and encrypt:
            sealed = source_row.sealed  # the same ciphertext: copied as it is
        elif source_row.sealed or encrypt:
            if source_row.sealed:
                source_key_material = await asyncio.to_thread(self._object_key, source_row.sealed)
                assert source_key_material is not None
                decryptor = source_key_material.decryptor_at(0)
            if encrypt:
                object_key, sealed = await asyncio.to_thread(self._new_object_key)
                encryptor = object_key.encryptor()
        temp = self.root / "tmp" / uuid.uuid4().hex

        def copy() -> None:
            with handle, temp.open("xb") as out:
                if decryptor is None and encryptor is None:
                    _copy_file(handle.fileno(), out.fileno())
                else:
                    _transform_file(handle.fileno(), out.fileno(), decryptor, encryptor)
                os.fsync(out.fileno())

        try:
            await self._on_disk(copy)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        kept_tags = source_row.tags if new_tags is None else new_tags
        info = ObjectInfo(
            bucket=bucket,
            key=key,
            size=source.size,
            etag=source.etag,
            last_modified=time.time(),
            content_type=content_type if replace_metadata else source.content_type,
            metadata=dict(metadata or {}) if replace_metadata else dict(source.metadata),
            headers=dict(headers or {}) if replace_metadata else dict(source.headers),
            checksums=dict(source.checksums),
            encryption=SSE_S3 if encrypt else None,
            tag_count=len(kept_tags),
        )
        row = _Row("", kept_tags, sealed, source_row.parts)
        return await self._commit_object(info, temp, row, condition)

    async def object_parts(self, bucket: str, key: str) -> list[PartInfo] | None:
        info, row = await self._in_db(self._row_sync, bucket, key)
        if row.parts is None:
            return None
        algorithm = next(iter(info.checksums), None)
        return [
            PartInfo(number, size, "", info.last_modified, value, algorithm if value else None)
            for number, size, value in row.parts
        ]

    # ---------------------------------------------------------------- tagging
    async def get_object_tagging(self, bucket: str, key: str) -> dict[str, str]:
        _, row = await self._in_db(self._row_sync, bucket, key)
        return dict(row.tags)

    async def put_object_tagging(self, bucket: str, key: str, tags: dict[str, str]) -> None:
        encoded = msgspec.json.encode(validate_tags(list(tags.items()))).decode()

        def update() -> None:
            with self._transaction() as db:
                cursor = db.execute(
                    "UPDATE objects SET tags = ? WHERE bucket = ? AND key = ?",
                    (encoded, bucket, key),
                )
                if cursor.rowcount == 0:
                    self._require_bucket(bucket)
                    raise no_such_key(key)

        await self._in_db(update)

    async def delete_object_tagging(self, bucket: str, key: str) -> None:
        def update() -> None:
            with self._transaction() as db:
                cursor = db.execute(
                    "UPDATE objects SET tags = '{}' WHERE bucket = ? AND key = ?", (bucket, key)
                )
                if cursor.rowcount == 0:
                    self._require_bucket(bucket)
                    raise no_such_key(key)

        await self._freeing(update)

    # ---------------------------------------------------------------- listing
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
        return await self._in_db(
            self._list_sync, bucket, prefix, delimiter, start_after, continuation_token, max_keys
        )

    def _list_sync(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        start_after: str,
        token: str | None,
        max_keys: int,
    ) -> ListPage:
        self._require_bucket(bucket)
        page = ListPage()
        if max_keys <= 0:
            return page  # S3: no entries, and not truncated
        # Lower bound: (value, inclusive). Start at the prefix, after start_after, and
        # after the continuation token (the last key or common prefix returned).
        bound, inclusive = prefix, True
        for after in (start_after, token or ""):
            if not after:
                continue
            candidate, candidate_inclusive = after, False
            if delimiter and after.startswith(prefix) and delimiter in after[len(prefix) :]:
                # The token was a common prefix: skip every key under it.
                rest = after[len(prefix) :]
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                candidate, candidate_inclusive = _key_successor(common), True
            if candidate > bound or (candidate == bound and not candidate_inclusive):
                bound, inclusive = candidate, candidate_inclusive
        last_returned: str | None = None
        while True:
            op = ">=" if inclusive else ">"
            rows = self.db.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key {op} ? "
                "ORDER BY key LIMIT ?",
                (bucket, bound, _LIST_BATCH),
            ).fetchall()
            jumped = False
            for row in rows:
                key: str = row[1]
                if not key.startswith(prefix):
                    return page  # past the prefix: nothing more
                if len(page.objects) + len(page.common_prefixes) >= max_keys:
                    page.truncated = True
                    page.next_token = last_returned
                    return page
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                    page.common_prefixes.append(common)
                    last_returned = common
                    bound, inclusive = _key_successor(common), True
                    jumped = True
                    break  # re-query past everything under this prefix
                page.objects.append(_object_from_row(row))
                last_returned = key
                bound, inclusive = key, False
            if not jumped and len(rows) < _LIST_BATCH:
                return page

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
        upload = UploadInfo(
            bucket=bucket,
            key=key,
            upload_id=uuid.uuid4().hex + uuid.uuid4().hex,
            initiated=time.time(),
            content_type=content_type,
            metadata=dict(metadata or {}),
            headers=dict(headers or {}),
            checksum_algorithm=algorithm,
            checksum_type=kind,
            tags=validate_tags(list((tags or {}).items())),
            encryption=encryption,
        )

        def create() -> None:
            self._require_bucket(bucket)
            self.db.execute(
                f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.upload_id,
                    bucket,
                    key,
                    upload.initiated,
                    content_type,
                    msgspec.json.encode(upload.metadata).decode(),
                    msgspec.json.encode(upload.headers).decode(),
                    upload.checksum_algorithm,
                    msgspec.json.encode(upload.tags).decode(),
                    upload.encryption,
                    upload.checksum_type,
                ),
            )

        await self._in_db(create)
        return upload

    def _upload_sync(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        row = self.db.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?", (upload_id,)
        ).fetchone()
        if row is None or row[1] != bucket or row[2] != key:
            self._require_bucket(bucket)
            raise no_such_upload(upload_id)
        return _upload_from_row(row)

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
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise S3Error(
                "Part number must be an integer between 1 and 10000, inclusive",
                code="InvalidArgument",
                status=400,
                extra={"ArgumentName": "partNumber", "ArgumentValue": str(part_number)},
            )
        upload = await self._in_db(self._upload_sync, bucket, key, upload_id)
        sent = checksum_algorithm.upper() if checksum_algorithm else None
        if upload.checksum_algorithm and sent and sent != upload.checksum_algorithm:
            raise S3Error(
                "Checksum Type mismatch occurred, expected checksum Type: "
                f"{upload.checksum_algorithm.lower()}, actual checksum Type: {sent.lower()}",
                code="InvalidRequest",
                status=400,
            )
        algorithm = upload.checksum_algorithm or sent
        written = await self._write_temp(
            body, MAX_SINGLE_PUT, algorithm, encrypt=upload.encryption == SSE_S3
        )
        try:
            file = await self._on_disk(self._install_sync, written.path, "parts")
        except BaseException:
            written.path.unlink(missing_ok=True)
            raise
        part = PartInfo(
            part_number, written.size, written.md5, time.time(), written.checksum, algorithm
        )

        def record() -> str | None:
            with self._transaction() as db:
                self._upload_sync(bucket, key, upload_id)
                old = db.execute(
                    "SELECT file FROM parts WHERE upload_id = ? AND part_number = ?",
                    (upload_id, part_number),
                ).fetchone()
                db.execute(
                    f"INSERT OR REPLACE INTO parts (upload_id, {_PART_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        upload_id,
                        part_number,
                        part.size,
                        part.etag,
                        part.last_modified,
                        part.checksum,
                        file,
                        part.checksum_algorithm,
                        written.sealed,
                    ),
                )
            return old[0] if old else None

        faults.crash_point("local-store-after-rename")
        try:
            old = await self._in_db(record)
        except BaseException:
            await self._unlink(file)
            raise
        if old is not None:
            faults.crash_point("local-store-after-commit")
            await self._unlink(old)
        return part

    def _parts_sync(self, upload_id: str) -> list[tuple[PartInfo, str, str | None]]:
        """(part, its file, its sealed data key) of an upload, by part number."""
        rows = self.db.execute(
            f"SELECT {_PART_COLUMNS} FROM parts WHERE upload_id = ? ORDER BY part_number",
            (upload_id,),
        ).fetchall()
        return [(PartInfo(r[0], r[1], r[2], r[3], r[4], r[6]), r[5], r[7]) for r in rows]

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        def parts() -> list[PartInfo]:
            self._upload_sync(bucket, key, upload_id)
            return [part for part, _, _ in self._parts_sync(upload_id)]

        return await self._in_db(parts)

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[UploadInfo]:
        def uploads() -> list[UploadInfo]:
            self._require_bucket(bucket)
            rows = self.db.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE bucket = ? AND key >= ? "
                "ORDER BY key, initiated",
                (bucket, prefix),
            ).fetchall()
            return [_upload_from_row(r) for r in rows if r[2].startswith(prefix)]

        return await self._in_db(uploads)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        def abort() -> list[str]:
            with self._transaction() as db:
                self._upload_sync(bucket, key, upload_id)
                files = [f for _, f, _ in self._parts_sync(upload_id)]
                db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
                db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            return files

        for file in await self._freeing(abort):
            await self._unlink(file)

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

        def load() -> tuple[UploadInfo, dict[int, tuple[PartInfo, str, str | None]]]:
            upload = self._upload_sync(bucket, key, upload_id)
            return upload, {p.part_number: (p, f, k) for p, f, k in self._parts_sync(upload_id)}

        try:
            upload, stored = await self._in_db(load)
        except S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise
            return await completed_before(self, bucket, key, upload_id, listed)
        await self._check_condition(bucket, key, condition)
        algorithm = upload.checksum_algorithm
        check_completion_checksum_type(upload, checksum_type)
        chosen: list[tuple[PartInfo, str, str | None]] = []
        for index, listed_part in enumerate(listed):
            found = stored.get(listed_part.part_number)
            if found is None or found[0].etag != listed_part.etag.strip('"'):
                raise invalid_part(listed_part.part_number)
            check_listed_part_checksum(listed_part, found[0].checksum_algorithm, found[0].checksum)
            if index < len(listed) - 1 and found[0].size < MIN_PART_SIZE:
                raise entity_too_small(listed_part.part_number, found[0].size)
            chosen.append(found)
        size = sum(p.size for p, _, _ in chosen)
        if object_size is not None and object_size != size:
            raise object_size_mismatch(object_size, size)
        checksums: dict[str, str] = {}
        if algorithm and all(p.checksum_algorithm == algorithm for p, _, _ in chosen):
            checksums[algorithm] = combined_checksum(
                algorithm,
                upload.checksum_type or "COMPOSITE",
                [(p.size, p.checksum or "") for p, _, _ in chosen],
            )
        check_completion_checksum(algorithm, checksums, checksum)
        encryptor: Any = None
        sealed: str | None = None
        if upload.encryption == SSE_S3:
            object_key, sealed = await asyncio.to_thread(self._new_object_key)
            encryptor = object_key.encryptor()
        part_keys = [
            await asyncio.to_thread(self._object_key, part_sealed) if part_sealed else None
            for _, _, part_sealed in chosen
        ]
        temp = self.root / "tmp" / uuid.uuid4().hex

        def concatenate() -> None:
            with temp.open("xb") as out:
                for (_, file, _), part_key in zip(chosen, part_keys, strict=True):
                    with (self.root / file).open("rb") as part_file:
                        if part_key is None and encryptor is None:
                            _copy_file(part_file.fileno(), out.fileno())
                        else:
                            decryptor = part_key.decryptor_at(0) if part_key else None
                            _transform_file(part_file.fileno(), out.fileno(), decryptor, encryptor)
                os.fsync(out.fileno())

        try:
            await self._on_disk(concatenate)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        faults.crash_point("complete-multipart-after-concatenate")
        info = ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            etag=multipart_etag([p.etag for p, _, _ in chosen]),
            last_modified=time.time(),
            content_type=upload.content_type,
            metadata=upload.metadata,
            headers=upload.headers,
            checksums=checksums,
            encryption=upload.encryption,
            tag_count=len(upload.tags),
        )
        part_list = [
            [p.part_number, p.size, p.checksum if algorithm in checksums else None]
            for p, _, _ in chosen
        ]
        try:
            file = await self._on_disk(self._install_sync, temp, "data")
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        row = _Row(file, upload.tags, sealed, part_list)
        faults.crash_point("complete-multipart-after-rename")

        def commit() -> tuple[str | None, list[str]]:
            all_parts: list[str] = []

            def drop_upload() -> None:
                self._upload_sync(bucket, key, upload_id)  # not aborted meanwhile
                all_parts.extend(f for _, f, _ in self._parts_sync(upload_id))
                self.db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
                self.db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

            # One transaction: the object appears exactly when the upload disappears.
            return self._commit_object_sync(info, row, drop_upload, condition), all_parts

        try:
            old, part_files = await self._in_db(commit)
        except BaseException:
            await self._unlink(file)
            raise
        faults.crash_point("complete-multipart-after-commit")
        for stale in ([old] if old else []) + part_files:
            await self._unlink(stale)
        return info


def _transform_file(source_fd: int, target_fd: int, decryptor: Any, encryptor: Any) -> None:
    """Copy the rest of ``source_fd`` to ``target_fd`` through user space, decrypting
    and / or encrypting on the way."""
    while chunk := os.read(source_fd, _WRITE_BUFFER):
        if decryptor is not None:
            chunk = decryptor.update(chunk)
        if encryptor is not None:
            chunk = encryptor.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(target_fd, view) :]


def _object_from_row(row: tuple[Any, ...]) -> ObjectInfo:
    tags = row[10]
    return ObjectInfo(
        bucket=row[0],
        key=row[1],
        size=row[2],
        etag=row[3],
        last_modified=row[4],
        content_type=row[5],
        metadata=msgspec.json.decode(row[6]),
        headers=msgspec.json.decode(row[7]),
        checksums=msgspec.json.decode(row[8]),
        encryption=SSE_S3 if row[11] else None,
        tag_count=0 if tags in (None, "{}") else len(msgspec.json.decode(tags)),
    )


def _upload_from_row(row: tuple[Any, ...]) -> UploadInfo:
    return UploadInfo(
        upload_id=row[0],
        bucket=row[1],
        key=row[2],
        initiated=row[3],
        content_type=row[4],
        metadata=msgspec.json.decode(row[5]),
        headers=msgspec.json.decode(row[6]),
        checksum_algorithm=row[7],
        tags=msgspec.json.decode(row[8]),
        encryption=row[9],
        checksum_type=row[10],
    )


class _FileStream:
    """Bytes first..last (inclusive) of an open file, read in a worker thread (and
    decrypted, for an SSE-S3 body). A class rather than an async generator so that
    ``aclose`` closes the file even when the stream was never iterated."""

    def __init__(
        self, handle: Any, first: int, last: int, object_key: ObjectKey | None = None
    ) -> None:
        self._handle = handle
        self._position = first
        self._remaining = last - first + 1
        self._decryptor = object_key.decryptor_at(first) if object_key is not None else None

    def __aiter__(self) -> _FileStream:
        return self

    def _read(self, size: int) -> bytes:
        self._handle.seek(self._position)
        data: bytes = self._handle.read(size)
        return data

    async def __anext__(self) -> bytes:
        if self._remaining <= 0 or self._handle.closed:
            await self.aclose()
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(self._read, min(READ_CHUNK, self._remaining))
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        self._position += len(chunk)
        self._remaining -= len(chunk)
        if self._decryptor is not None:
            chunk = self._decryptor.update(chunk)
        return chunk

    async def aclose(self) -> None:
        self._handle.close()

    def __del__(self) -> None:
        self._handle.close()
