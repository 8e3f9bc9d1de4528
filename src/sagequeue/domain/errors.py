"""Exceptions that carry an AWS error code.

Every layer raises these; ``sagequeue.frontdoor.errors`` is the one place that turns
them into wire responses for each protocol (rest-json, json 1.1, rest-xml).
"""

from __future__ import annotations

import enum


class StartupError(Exception):
    """Start-up cannot go on, for a reason its message fully explains (a bad setting
    or declaration): reported as one line, without a traceback."""


class ServiceError(Exception):
    """An error with an AWS error code and HTTP status."""

    code: str = "InternalFailure"
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        # Extra fields some protocols carry (S3: BucketName, Key, Resource...).
        self.extra: dict[str, str] = extra or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.status}, {self.message!r})"


# --- SageMaker runtime (rest-json) -------------------------------------------------
class ValidationError(ServiceError):
    """Runtime API input error (``ValidationError`` in the sagemaker-runtime model)."""

    code = "ValidationError"
    status = 400


class ServiceUnavailable(ServiceError):
    code = "ServiceUnavailable"
    status = 503


class InternalFailure(ServiceError):
    code = "InternalFailure"
    status = 500


# --- SageMaker control plane (json 1.1) ----------------------------------------------
class ValidationException(ServiceError):
    code = "ValidationException"
    status = 400


class ResourceNotFound(ServiceError):
    code = "ResourceNotFound"
    status = 400


class ResourceInUse(ServiceError):
    code = "ResourceInUse"
    status = 400


class ResourceLimitExceeded(ServiceError):
    code = "ResourceLimitExceeded"
    status = 400


class UnknownOperation(ServiceError):
    code = "UnknownOperationException"
    status = 400


# --- CloudWatch Logs (json 1.1) -------------------------------------------------------
class LogsResourceNotFound(ServiceError):
    """A log group or stream that does not exist (CloudWatch Logs' code)."""

    code = "ResourceNotFoundException"
    status = 400


class InvalidParameter(ServiceError):
    """A CloudWatch Logs input error (its validation errors carry this code too)."""

    code = "InvalidParameterException"
    status = 400


# --- S3 (rest-xml) -------------------------------------------------------------------
class S3Error(ServiceError):
    """S3 error; ``code`` is S3's (NoSuchKey, NoSuchBucket, ...)."""

    code = "InternalError"
    status = 500


# --- Authentication ------------------------------------------------------------------
class AuthFailure(enum.Enum):
    """Why a SigV4 check failed; each protocol names these with its own codes."""

    MISSING = "missing"  # no Authorization header / presign query
    INCOMPLETE = "incomplete"  # malformed Authorization / missing parts
    MISMATCH = "mismatch"  # signature does not match
    UNKNOWN_KEY = "unknown_key"  # access key id not known
    SKEWED = "skewed"  # X-Amz-Date too far from server time
    EXPIRED = "expired"  # presigned URL past X-Amz-Expires
    MISSING_DATE = "missing_date"  # header form without X-Amz-Date
    QUERY_MALFORMED = "query_malformed"  # presign query parameters missing or invalid
    NOT_YET_VALID = "not_yet_valid"  # presigned URL dated in the future
    WRONG_REGION = "wrong_region"  # credential scope names another region
    WRONG_SERVICE = "wrong_service"  # credential scope names another service
    HEADERS_NOT_SIGNED = "headers_not_signed"  # S3: an x-amz-* header outside the signature


class SignatureError(ServiceError):
    status = 403

    def __init__(
        self, failure: AuthFailure, message: str, *, extra: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, code=failure.value, extra=extra)
        self.failure = failure
        # The presign query form (S3 names some of its failures differently).
        self.presigned = False
        # S3's wording where it differs from the JSON APIs' (``message``).
        self.s3_message: str | None = None


class AccessDenied(ServiceError):
    """A verified key whose policy does not allow the action on the resource. Each
    protocol renders it in its own shape (S3: AccessDenied 403; the JSON APIs:
    AccessDeniedException 400)."""

    code = "AccessDenied"
    status = 403

    def __init__(self, message: str, *, action: str, resource: str) -> None:
        super().__init__(message)
        self.action = action
        self.resource = resource


# --- CloudWatch (query / json 1.0 / smithy-rpc-v2-cbor) -------------------------------
class InvalidParameterValue(ServiceError):
    code = "InvalidParameterValue"
    status = 400


class MissingParameter(ServiceError):
    code = "MissingParameter"
    status = 400


class InvalidParameterCombination(ServiceError):
    code = "InvalidParameterCombination"
    status = 400


class CloudWatchNotFound(ServiceError):
    code = "ResourceNotFound"
    status = 404


class LimitExceeded(ServiceError):
    code = "LimitExceeded"
    status = 400


class InvalidNextToken(ServiceError):
    code = "InvalidNextToken"
    status = 400


# --- Application Auto Scaling (json 1.1) --------------------------------------------
class ObjectNotFound(ServiceError):
    code = "ObjectNotFoundException"
    status = 400


class ConcurrentUpdate(ServiceError):
    code = "ConcurrentUpdateException"
    status = 400


class AutoScalingLimitExceeded(ServiceError):
    code = "LimitExceededException"
    status = 400


class FailedResourceAccess(ServiceError):
    code = "FailedResourceAccessException"
    status = 400
