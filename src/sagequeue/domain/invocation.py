"""InvokeEndpointAsync: the request's rules (from the sagemaker-runtime model) and where
its results go. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from sagequeue.domain.errors import ValidationError
from sagequeue.domain.validation import (
    IntegerRule,
    StringRule,
    validation_message,
    violation,
    wire_int,
)

MAX_INLINE_BODY_BYTES = 128_000
DEFAULT_REQUEST_TTL_SECONDS = 21600
DEFAULT_INVOCATION_TIMEOUT_SECONDS = 900

# Member constraints exactly as in botocore's sagemaker-runtime 2017-05-13 model.
ENDPOINT_NAME = StringRule.of(
    "endpointName", max_length=63, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
)
CONTENT_TYPE = StringRule.of("contentType", max_length=1024, pattern=r"\p{ASCII}*")
ACCEPT = StringRule.of("accept", max_length=1024, pattern=r"\p{ASCII}*")
CUSTOM_ATTRIBUTES = StringRule.of(
    "customAttributes", max_length=1024, pattern=r"\p{ASCII}*", sensitive=True
)
INFERENCE_ID = StringRule.of(
    "inferenceId", min_length=1, max_length=64, pattern=r"\A\S[\p{Print}]*\z"
)
INPUT_LOCATION = StringRule.of(
    "inputLocation", min_length=1, max_length=1024, pattern=r"^(https|s3)://([^/]+)/?(.*)$"
)
S3_OUTPUT_PATH_EXTENSION = StringRule.of(
    "s3OutputPathExtension",
    min_length=1,
    max_length=512,
    pattern=r"^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$",
)
FILENAME = StringRule.of(
    "filename", min_length=1, max_length=32, pattern=r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$"
)
REQUEST_TTL_SECONDS = IntegerRule("requestTTLSeconds", 60, 21600)
INVOCATION_TIMEOUT_SECONDS = IntegerRule("invocationTimeoutSeconds", 1, 3600)


@dataclass(slots=True)
class AsyncInvocationInput:
    """InvokeEndpointAsync's members as sent (``None`` when absent).

    Integers arrive as header text: they are parsed here so that a malformed number
    gets a validation error naming the member.
    """

    endpoint_name: str
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    inference_id: str | None = None
    input_location: str | None = None
    s3_output_path_extension: str | None = None
    filename: str | None = None
    request_ttl_seconds: str | None = None
    invocation_timeout_seconds: str | None = None
    body: bytes | None = None


@dataclass(slots=True)
class ValidInvocationInput:
    endpoint_name: str
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    inference_id: str | None
    input_location: str | None
    s3_output_path_extension: str | None
    filename: str | None
    request_ttl_seconds: int
    invocation_timeout_seconds: int
    body: bytes | None


def _parse_int(text: str | None, rule: IntegerRule, default: int, out: list[str]) -> int:
    if text is None:
        return default
    try:
        value = wire_int(text, signed=True)
    except ValueError:
        out.append(violation(text, rule.path, "Member must be an integer"))
        return default
    rule.check(value, out)
    return value


def validate_invocation(request: AsyncInvocationInput) -> ValidInvocationInput:
    """Check every member; raises ValidationError listing all violations."""
    out: list[str] = []
    ENDPOINT_NAME.check(request.endpoint_name, out)
    if request.content_type is not None:
        CONTENT_TYPE.check(request.content_type, out)
    if request.accept is not None:
        ACCEPT.check(request.accept, out)
    if request.custom_attributes is not None:
        CUSTOM_ATTRIBUTES.check(request.custom_attributes, out)
    if request.inference_id is not None:
        INFERENCE_ID.check(request.inference_id, out)
    if request.input_location is not None:
        INPUT_LOCATION.check(request.input_location, out)
    if request.s3_output_path_extension is not None:
        S3_OUTPUT_PATH_EXTENSION.check(request.s3_output_path_extension, out)
    if request.filename is not None:
        FILENAME.check(request.filename, out)
    ttl = _parse_int(
        request.request_ttl_seconds, REQUEST_TTL_SECONDS, DEFAULT_REQUEST_TTL_SECONDS, out
    )
    timeout = _parse_int(
        request.invocation_timeout_seconds,
        INVOCATION_TIMEOUT_SECONDS,
        DEFAULT_INVOCATION_TIMEOUT_SECONDS,
        out,
    )
    body = request.body or None  # an empty HTTP body means "no Body"
    if body is not None and len(body) > MAX_INLINE_BODY_BYTES:
        out.append(
            f"Value at 'body' failed to satisfy constraint: Member must have length less "
            f"than or equal to {MAX_INLINE_BODY_BYTES}"
        )
    if out:
        raise ValidationError(validation_message(out))
    if body is not None and request.input_location is not None:
        raise ValidationError(
            "Body and InputLocation are mutually exclusive. Provide exactly one of them."
        )
    if body is None and request.input_location is None:
        raise ValidationError(
            "Either Body or InputLocation must be provided. Provide exactly one of them."
        )
    return ValidInvocationInput(
        endpoint_name=request.endpoint_name,
        content_type=request.content_type,
        accept=request.accept,
        custom_attributes=request.custom_attributes,
        inference_id=request.inference_id,
        input_location=request.input_location,
        s3_output_path_extension=request.s3_output_path_extension,
        filename=request.filename,
        request_ttl_seconds=ttl,
        invocation_timeout_seconds=timeout,
        body=body,
    )


# ======================================================================================
# Result locations (issue 2 item 8)
# ======================================================================================


@dataclass(slots=True, frozen=True)
class ResultLocations:
    output_location: str
    failure_location: str


def join_s3(base: str, *parts: str) -> str:
    """Join path parts under an s3:// (or https://) prefix without doubled slashes."""
    result = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            result = f"{result}/{part}"
    return result


def result_locations(
    s3_output_path: str,
    s3_failure_path: str | None,
    file_name: str,
    s3_output_path_extension: str | None = None,
) -> ResultLocations:
    """Where SageMaker writes an async result: ``<S3OutputPath>[/<ext>]/<name>.out``, and
    the failure object ``<S3FailurePath>[/<ext>]/<name>-error.out`` (S3OutputPath when
    the endpoint has no S3FailurePath), as SageMaker names them."""
    extension = s3_output_path_extension or ""
    return ResultLocations(
        output_location=join_s3(s3_output_path, extension, f"{file_name}.out"),
        failure_location=join_s3(
            s3_failure_path or s3_output_path, extension, f"{file_name}-error.out"
        ),
    )
