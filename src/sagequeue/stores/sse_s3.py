"""SSE-S3 (``x-amz-server-side-encryption: AES256``) for the local object store.

Each encrypted body gets its own random 256-bit data key and IV and is stored as
AES-256-CTR ciphertext (CTR so that a range read decrypts from any offset). The data key
and IV are sealed with AES-256-GCM under the store's server key and kept in the index
row beside the object, never on disk in the clear. The server key is 32 random bytes in
``<store root>/sse-s3.key`` (by default ``<data-dir>/objects/sse-s3.key``), created once
with mode 0600 by the first process that opens the store; losing it loses every
encrypted object, so back it up with the data directory.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SSE_S3 = "AES256"
KEY_FILE = "sse-s3.key"
_KEY_BYTES = 32
_IV_BYTES = 16
_NONCE_BYTES = 12
_SEAL_CONTEXT = b"sagequeue sse-s3 object key v1"


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """The data key and IV of one stored body."""

    key: bytes
    iv: bytes

    def encryptor(self) -> Any:
        return Cipher(algorithms.AES(self.key), modes.CTR(self.iv)).encryptor()

    def decryptor_at(self, offset: int) -> Any:
        """A CTR decryptor positioned at byte ``offset`` of the plaintext."""
        counter = (int.from_bytes(self.iv, "big") + offset // 16) % (1 << 128)
        decryptor = Cipher(
            algorithms.AES(self.key), modes.CTR(counter.to_bytes(16, "big"))
        ).decryptor()
        if offset % 16:
            decryptor.update(bytes(offset % 16))
        return decryptor


class ServerKey:
    """The store's key-encryption key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def load_or_create(cls, path: Path) -> ServerKey:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
            if len(key) != _KEY_BYTES:
                raise ValueError(f"{path} does not hold a {_KEY_BYTES}-byte key") from None
            return cls(key)
        key = os.urandom(_KEY_BYTES)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key)

    def new_object_key(self) -> tuple[ObjectKey, str]:
        """A fresh data key, and its sealed form to store beside the object."""
        object_key = ObjectKey(os.urandom(_KEY_BYTES), os.urandom(_IV_BYTES))
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, object_key.key + object_key.iv, _SEAL_CONTEXT)
        return object_key, base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str) -> ObjectKey:
        raw = base64.b64decode(sealed)
        plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _SEAL_CONTEXT)
        return ObjectKey(plain[:_KEY_BYTES], plain[_KEY_BYTES:])
