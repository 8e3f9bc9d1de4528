"""The one place where exceptions become AWS wire errors, per protocol."""

from __future__ import annotations

import enum
import logging
from xml.sax.saxutils import escape

import msgspec

from sagequeue.domain.errors import (
    AccessDenied,
    AuthFailure,
    InternalFailure,
    ServiceError,
    SignatureError,
)
from sagequeue.frontdoor.http import Response

log = logging.getLogger(__name__)


class WireProtocol(enum.Enum):
    REST_JSON = "rest-json"  # sagemaker-runtime
    JSON = "json"  # sagemaker control plane, application-autoscaling (JSON 1.1)
    REST_XML = "rest-xml"  # s3
    JSON_1_0 = "json-1.0"  # cloudwatch (awsQueryCompatible)
    RPC_V2_CBOR = "smithy-rpc-v2-cbor"  # cloudwatch (awsQueryCompatible)
    QUERY = "query"  # cloudwatch


# The query protocol's XML namespace (CloudWatch is the one query service here).
QUERY_XML_NAMESPACE = "http://monitoring.amazonaws.com/doc/2010-08-01/"
# CloudWatch's error shapes whose name differs from their query error code: the JSON
# and CBOR protocols name the shape in "__type" and the code in x-amzn-query-error.
_QUERY_COMPATIBLE_SHAPES = {
    "InvalidParameterValue": "InvalidParameterValueException",
    "MissingParameter": "MissingRequiredParameterException",
    "InvalidParameterCombination": "InvalidParameterCombinationException",
    "LimitExceeded": "LimitExceededFault",
    "InternalServiceError": "InternalServiceFault",
}
_QUERY_AUTH: dict[AuthFailure, str] = {
    AuthFailure.MISMATCH: "SignatureDoesNotMatch",
    AuthFailure.UNKNOWN_KEY: "InvalidClientTokenId",
}


# (code, HTTP status) for each signature failure, per protocol family.
_JSON_AUTH: dict[AuthFailure, tuple[str, int]] = {
    AuthFailure.MISSING: ("MissingAuthenticationToken", 403),
    AuthFailure.INCOMPLETE: ("IncompleteSignature", 403),
    AuthFailure.MISMATCH: ("InvalidSignatureException", 403),
    AuthFailure.UNKNOWN_KEY: ("UnrecognizedClientException", 403),
    AuthFailure.SKEWED: ("InvalidSignatureException", 403),
    AuthFailure.EXPIRED: ("InvalidSignatureException", 403),
    AuthFailure.MISSING_DATE: ("IncompleteSignature", 403),
    AuthFailure.QUERY_MALFORMED: ("IncompleteSignature", 403),
    AuthFailure.NOT_YET_VALID: ("InvalidSignatureException", 403),
    AuthFailure.WRONG_REGION: ("InvalidSignatureException", 403),
    AuthFailure.WRONG_SERVICE: ("InvalidSignatureException", 403),
    AuthFailure.HEADERS_NOT_SIGNED: ("InvalidSignatureException", 403),
}
# S3's (code, status, message); a message of None keeps the exception's own.
_S3_AUTH: dict[AuthFailure, tuple[str, int, str | None]] = {
    AuthFailure.MISSING: ("AccessDenied", 403, "Access Denied"),
    AuthFailure.INCOMPLETE: ("AuthorizationHeaderMalformed", 400, None),
    AuthFailure.MISMATCH: (
        "SignatureDoesNotMatch",
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    AuthFailure.UNKNOWN_KEY: (
        "InvalidAccessKeyId",
        403,
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    AuthFailure.SKEWED: (
        "RequestTimeTooSkewed",
        403,
        "The difference between the request time and the current time is too large.",
    ),
    AuthFailure.EXPIRED: ("AccessDenied", 403, "Request has expired"),
    AuthFailure.MISSING_DATE: (
        "AccessDenied",
        403,
        "AWS authentication requires a valid Date or x-amz-date header",
    ),
    AuthFailure.QUERY_MALFORMED: ("AuthorizationQueryParametersError", 400, None),
    AuthFailure.NOT_YET_VALID: ("AccessDenied", 403, "Request is not yet valid"),
    AuthFailure.WRONG_REGION: ("AuthorizationHeaderMalformed", 400, None),
    AuthFailure.WRONG_SERVICE: ("AuthorizationHeaderMalformed", 400, None),
    AuthFailure.HEADERS_NOT_SIGNED: ("AccessDenied", 403, None),
}


def error_response(
    exc: BaseException, protocol: WireProtocol, request_id: str, resource: str = ""
) -> Response:
    if not isinstance(exc, ServiceError):
        log.exception("internal error (request %s)", request_id, exc_info=exc)
        exc = InternalFailure("An internal error occurred. Request id: " + request_id)
        if protocol is WireProtocol.REST_XML:
            exc.code = "InternalError"
            exc.message = "We encountered an internal error. Please try again."
    elif not isinstance(exc, SignatureError):
        log.debug("request %s failed: %r", request_id, exc)
    code, status, message = exc.code, exc.status, exc.message
    extra = exc.extra
    if isinstance(exc, SignatureError):
        if protocol is WireProtocol.REST_XML:
            code, status, s3_message = _S3_AUTH[exc.failure]
            message = s3_message or exc.s3_message or message
            if exc.failure is AuthFailure.WRONG_REGION and exc.presigned:
                code = "AuthorizationQueryParametersError"
        else:
            code, status = _JSON_AUTH[exc.failure]
            if protocol in _QUERY_COMPATIBLE:
                code = _QUERY_AUTH.get(exc.failure, code)
    elif isinstance(exc, AccessDenied) and protocol in _QUERY_COMPATIBLE:
        code, status = "AccessDenied", 403
    elif isinstance(exc, AccessDenied) and protocol is not WireProtocol.REST_XML:
        # The JSON APIs' name and status for the same refusal (AWS's common errors).
        code, status = "AccessDeniedException", 400
    elif protocol in _QUERY_COMPATIBLE and code == InternalFailure.code:
        code = "InternalServiceError"
    # A message may quote a header value holding bytes that are not UTF-8.
    message = message.encode("utf-8", "replace").decode("utf-8")
    if protocol is WireProtocol.REST_XML:
        return _xml_error(code, status, message, request_id, resource, extra)
    if protocol in _QUERY_COMPATIBLE:
        return _query_compatible_error(protocol, code, status, message, request_id)
    body = msgspec.json.encode({"__type": code, "message": message})
    headers = [
        (
            "content-type",
            "application/json"
            if protocol is WireProtocol.REST_JSON
            else "application/x-amz-json-1.1",
        ),
        ("x-amzn-requestid", request_id),
        ("x-amzn-errortype", code),
    ]
    return Response(status, headers, body)


_QUERY_COMPATIBLE = (WireProtocol.QUERY, WireProtocol.JSON_1_0, WireProtocol.RPC_V2_CBOR)


def _query_compatible_error(
    protocol: WireProtocol, code: str, status: int, message: str, request_id: str
) -> Response:
    """CloudWatch's errors: XML in the query protocol; in JSON 1.0 and CBOR the error
    shape in ``__type`` and the query code in ``x-amzn-query-error`` (botocore reads the
    code from there for awsQueryCompatible services)."""
    sender = status < 500
    if protocol is WireProtocol.QUERY:
        from sagequeue.frontdoor.wire_shapes import query_xml_error

        body = query_xml_error(code, message, sender, QUERY_XML_NAMESPACE, request_id)
        return Response(
            status,
            [("content-type", "text/xml"), ("x-amzn-requestid", request_id)],
            body,
        )
    shape = _QUERY_COMPATIBLE_SHAPES.get(code, code)
    document = {"__type": f"com.amazonaws.cloudwatch#{shape}", "message": message}
    headers = [
        ("x-amzn-requestid", request_id),
        ("x-amzn-query-error", f"{code};{'Sender' if sender else 'Receiver'}"),
    ]
    if protocol is WireProtocol.RPC_V2_CBOR:
        import cbor2

        headers += [("content-type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
        return Response(status, headers, cbor2.dumps(document))
    headers.append(("content-type", "application/x-amz-json-1.0"))
    return Response(status, headers, msgspec.json.encode(document))


def _xml_error(
    code: str,
    status: int,
    message: str,
    request_id: str,
    resource: str,
    extra: dict[str, str],
) -> Response:
    fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in extra.items())
    if resource and "Resource" not in extra:
        fields += f"<Resource>{escape(resource)}</Resource>"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{fields}"
        + f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>"
    ).encode()
    headers = [
        ("content-type", "application/xml"),
        ("x-amz-request-id", request_id),
        ("x-amz-id-2", request_id),
    ]
    return Response(status, headers, body)
