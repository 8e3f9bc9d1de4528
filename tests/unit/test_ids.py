"""Request ids: UUIDv7, unique, time-ordered."""

from __future__ import annotations

import os
import time
import uuid

from sagequeue.domain.ids import new_id


def test_ids_are_version_7_uuids():
    parsed = uuid.UUID(new_id())
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat():
    ids = {new_id() for _ in range(100_000)}
    assert len(ids) == 100_000


def test_ids_sort_by_creation_millisecond():
    first = new_id()
    time.sleep(0.002)
    assert new_id() > first


def test_forked_child_does_not_repeat_the_parent_sequence():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read_end, 64).decode()
    assert child_id != new_id()
    assert child_id[15:] != new_id()[15:]  # the random parts differ, not only the time
