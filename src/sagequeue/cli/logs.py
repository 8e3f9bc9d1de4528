"""Logging for ``sagequeue serve``: one format, and no secret or signature in any line.

At debug level botocore (the s3:// object backend's client) logs each request's
Authorization header, string to sign and signature; clients' presigned URLs carry
theirs in the query. A filter on the handlers redacts these, and the secret keys the
server knows, from every record, whoever logged it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

REDACTED = "<redacted>"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_PATTERNS = (
    # SigV4 Authorization header and presigned query (Signature=, X-Amz-Signature=).
    re.compile(r"(?i)(signature=)[^&\s'\",;]+"),
    # botocore's debug line "Signature:\n<hex>".
    re.compile(r"(?i)(signature:\s*)[0-9a-f]{16,}"),
    # SigV2 Authorization header: "AWS <AccessKeyId>:<base64 signature>".
    re.compile(r"(AWS [A-Za-z0-9]+:)[A-Za-z0-9+/=]+"),
    # Session tokens, in a header or a query.
    re.compile(r"(?i)(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^&\s'\",]+"),
    # Any secret named as such in a mapping or an assignment.
    re.compile(r"(?i)(secret_?access_?key['\"]?\s*[:=]\s*['\"]?)[^&\s'\",]+"),
)
# Loggers that print signed requests and signatures at DEBUG.
_CHATTY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "awscrt")


class RedactSecrets(logging.Filter):
    """Rewrites each record's message with signatures and known secrets redacted."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        merged = set(self._secrets) | {s for s in secrets if len(s) >= 8}
        self._secrets = sorted(merged, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        redacted = self.redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> RedactSecrets:
    """Root logging at ``level`` with the redacting filter on every root handler."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    known = list(secrets)
    env_secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if env_secret:
        known.append(env_secret)
    redact = RedactSecrets(known)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    if level.lower() == "debug":
        # Their DEBUG lines are mostly signing details; INFO keeps what helps.
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
    return redact
