"""Secrets and signatures never reach a log line (sagequeue.cli.logs)."""

from __future__ import annotations

import logging

from sagequeue.cli.logs import REDACTED, RedactSecrets

SIG = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"


def redacted(message: str, *args: object, secrets: tuple[str, ...] = ()) -> str:
    record = logging.LogRecord("botocore.endpoint", logging.DEBUG, __file__, 1, message, args, None)
    RedactSecrets(secrets).filter(record)
    return record.getMessage()


def test_sigv4_authorization_header_signature_is_redacted() -> None:
    line = redacted(
        "Sending http request: %s",
        {
            "Authorization": b"AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/"
            b"aws4_request, SignedHeaders=host, Signature=" + SIG.encode()
        },
    )
    assert SIG not in line and REDACTED in line and "Credential=AKID" in line


def test_botocore_signature_debug_line_is_redacted() -> None:
    assert SIG not in redacted("Signature:\n%s", SIG)


def test_presigned_url_signature_is_redacted() -> None:
    line = redacted("GET /b/k?X-Amz-Signature=%s&X-Amz-Date=x", SIG)
    assert SIG not in line and "X-Amz-Date=x" in line


def test_sigv2_authorization_is_redacted() -> None:
    assert "c2lnbmF0dXJl" not in redacted("Authorization: AWS AKIDEXAMPLE:c2lnbmF0dXJl=")


def test_known_secrets_are_redacted_wherever_they_appear() -> None:
    line = redacted(
        "credentials %s", {"key": "wJalrXUtnFEMI/K7MDENG"}, secrets=("wJalrXUtnFEMI/K7MDENG",)
    )
    assert "wJalrXUtnFEMI" not in line


def test_plain_messages_are_left_alone() -> None:
    assert (
        redacted("request %s failed: %r", "abc", ValueError("x"))
        == "request abc failed: ValueError('x')"
    )
