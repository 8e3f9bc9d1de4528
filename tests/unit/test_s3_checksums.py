"""Checksum algorithms S3 offers, with and without awscrt."""

from __future__ import annotations

import pytest

from sagequeue.stores import objects
from sagequeue.stores.objects import new_checksum

# Known values for b"data" (as botocore computes them).
KNOWN = {"CRC32": "rfPzYw==", "CRC32C": "rth90Q==", "CRC64NVME": "7a5hQ478J4A="}


@pytest.mark.parametrize("algorithm", sorted(KNOWN))
def test_checksum_of_data_matches_botocore(algorithm: str) -> None:
    checksum = new_checksum(algorithm)
    checksum.update(b"da")
    checksum.update(b"ta")
    assert checksum.b64() == KNOWN[algorithm]


@pytest.mark.parametrize(
    ("poly", "width", "algorithm"),
    [(0x82F63B78, 32, "CRC32C"), (0x9A6C9329AC4BC9B5, 64, "CRC64NVME")],
)
def test_pure_python_fallback_agrees_with_the_fast_implementation(
    poly: int, width: int, algorithm: str
) -> None:
    slow = objects._slow_crc(objects._crc_table(poly, width), (1 << width) - 1)
    value = slow(b"ta", slow(b"da", 0))
    assert value.to_bytes(width // 8, "big") == __import__("base64").b64decode(KNOWN[algorithm])


def test_unknown_algorithm_is_invalid_request() -> None:
    with pytest.raises(objects.S3Error) as caught:
        new_checksum("MD4")
    assert caught.value.code == "InvalidRequest"
