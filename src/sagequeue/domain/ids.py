"""Identifiers for requests and invocations.

UUIDv7 strings (RFC 9562): time-ordered, so that the queue store's unique index takes
new ids at its end rather than at random places, and cheap: ``uuid.uuid4()`` reads
``os.urandom`` on every call, which costs tens of microseconds on some kernels and
sandboxes; a per-process generator seeded from ``os.urandom`` costs well under one.
Uniqueness, not secrecy, is what these ids need.
"""

from __future__ import annotations

import os
import random
import time

_random = random.Random(os.urandom(32))
# A forked child must not repeat its parent's sequence.
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))

_RAND_B_MASK = (1 << 62) - 1


def new_id() -> str:
    """A UUIDv7 string: 48-bit Unix milliseconds, version 7, 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = _random.getrandbits(74)
    value = (
        (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & _RAND_B_MASK)
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
