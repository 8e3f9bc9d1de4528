"""Length-prefixed frames between the server and a Python model instance process.

A frame is ``kind (1 byte) | request number (4 bytes) | payload length (4 bytes) | payload``.
Request numbers multiplex concurrent invocations over one pair of pipes.
"""

from __future__ import annotations

import enum
import struct

HEADER = struct.Struct("!BII")
# Inputs are streamed into the instance in chunks of at most this size.
CHUNK_SIZE = 1024 * 1024


class FrameKind(enum.IntEnum):
    # server -> instance
    START = 1  # payload: JSON request metadata (inference id, content type, accept, ...)
    DATA = 2  # payload: a chunk of the request body
    END = 3  # the body is complete: run the handler
    PING = 4
    # instance -> server
    READY = 10  # the model loaded (request number 0)
    LOAD_ERROR = 11  # payload: why the model could not load (UTF-8)
    RESULT = 12  # payload: 4-byte meta length | JSON meta | response body
    ERROR = 13  # payload: failure message (UTF-8)
    PONG = 14


def encode_frame(kind: FrameKind, number: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, number, len(payload)) + payload
