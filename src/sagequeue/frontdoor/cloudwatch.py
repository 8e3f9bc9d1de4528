"""CloudWatch's wire protocols (signing name ``monitoring``): every protocol that the
botocore model lists, so that every client version works.

* ``smithy-rpc-v2-cbor``: ``POST /service/GraniteServiceVersion20100801/operation/<Op>``,
  CBOR bodies (recent botocore prefers it when it lacks JSON support);
* ``json`` (1.0): ``X-Amz-Target: GraniteServiceVersion20100801.<Op>`` (what botocore
  and the AWS CLI v1 installed here speak);
* ``query``: form-encoded ``Action=<Op>&Version=2010-08-01...``, XML answers (older
  botocore and SDKs).

The operations are in sagequeue.monitoring.cloudwatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from sagequeue.domain.errors import (
    InvalidParameterValue,
    ServiceError,
    ServiceUnavailable,
    UnknownOperation,
)
from sagequeue.frontdoor.errors import QUERY_XML_NAMESPACE as XML_NAMESPACE
from sagequeue.frontdoor.errors import WireProtocol
from sagequeue.frontdoor.http import Request, Response
from sagequeue.frontdoor.wire_shapes import (
    QueryInputError,
    decode_cbor,
    encode_cbor,
    normalize,
    parse_query,
    query_xml_response,
)
from sagequeue.monitoring.cloudwatch import CloudWatch, alarm_arn

TARGET_PREFIX = "GraniteServiceVersion20100801"
CBOR_PREFIX = f"/service/{TARGET_PREFIX}/operation/"
ALARM_ACTIONS = ("PutMetricAlarm", "DescribeAlarms", "DeleteAlarms")


def protocol_of(request: Request) -> WireProtocol:
    if request.path.startswith(CBOR_PREFIX):
        return WireProtocol.RPC_V2_CBOR
    if request.headers.get("x-amz-target", "").startswith(TARGET_PREFIX + "."):
        return WireProtocol.JSON_1_0
    return WireProtocol.QUERY


class CloudWatchApi:
    protocol = WireProtocol.QUERY
    service = "monitoring"

    def __init__(
        self,
        get_cloudwatch: Callable[[], CloudWatch | None],
        region: str,
        account_id: str,
        *,
        max_body: int = 1024 * 1024,
    ) -> None:
        self._get = get_cloudwatch
        self._region = region
        self._account_id = account_id
        self.max_body = max_body
        self._json = msgspec.json.Decoder()
        self._encode_json = msgspec.json.Encoder().encode

    def protocol_for(self, request: Request) -> WireProtocol:
        return protocol_of(request)

    def body_too_large(self) -> ServiceError:
        return InvalidParameterValue(f"Request body exceeds the maximum of {self.max_body} bytes.")

    async def handle(self, request: Request) -> Response:
        protocol = protocol_of(request)
        action, params = self._decode(request, protocol)
        model = CloudWatch.model()
        if action not in model.operation_names:
            raise UnknownOperation(f"Could not find operation {action}.", code="InvalidAction")
        operation = model.operation_model(action)
        params = normalize(params, operation.input_shape, InvalidParameterValue)
        if request.access is not None:
            for resource in self._resources(action, params):
                request.authorize("cloudwatch:" + action, resource)
        cloudwatch = self._get()
        if cloudwatch is None:
            raise ServiceUnavailable("The server is starting; retry shortly.")
        result = await cloudwatch.call(action, params)
        shape = operation.output_shape
        headers = [("x-amzn-requestid", request.request_id)]
        if protocol is WireProtocol.RPC_V2_CBOR:
            headers += [("content-type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
            return Response(200, headers, encode_cbor(result, shape))
        if protocol is WireProtocol.JSON_1_0:
            headers.append(("content-type", "application/x-amz-json-1.0"))
            return Response(200, headers, self._encode_json(result if shape is not None else {}))
        headers.append(("content-type", "text/xml"))
        body = query_xml_response(action, result, shape, XML_NAMESPACE, request.request_id)
        return Response(200, headers, body)

    def _decode(self, request: Request, protocol: WireProtocol) -> tuple[str, dict[str, Any]]:
        body = request.body or b""
        if protocol is WireProtocol.RPC_V2_CBOR:
            action = request.path[len(CBOR_PREFIX) :]
            if not body:
                return action, {}
            try:
                params = decode_cbor(body)
            except Exception as exc:
                raise SerializationException(f"The request body is not valid CBOR: {exc}") from None
            if not isinstance(params, dict):
                raise SerializationException("The request body must be a CBOR map.")
            return action, params
        if protocol is WireProtocol.JSON_1_0:
            action = request.headers["x-amz-target"][len(TARGET_PREFIX) + 1 :]
            if not body.strip():
                return action, {}
            try:
                params = self._json.decode(body)
            except (msgspec.DecodeError, RecursionError) as exc:
                raise SerializationException(f"The request body is not valid JSON: {exc}") from None
            if not isinstance(params, dict):
                raise SerializationException("The request body must be a JSON object.")
            return action, params
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True) if body else []
        except UnicodeDecodeError:
            raise InvalidParameterValue("The request body is not UTF-8.") from None
        pairs += request.query_list
        named = next((value for key, value in pairs if key == "Action"), None)
        if not named:
            raise MissingAction("Could not find the Action parameter in the request.")
        action = named
        model = CloudWatch.model()
        if action not in model.operation_names:
            raise UnknownOperation(f"Could not find operation {action}.", code="InvalidAction")
        try:
            params = parse_query(pairs, model.operation_model(action).input_shape)
        except QueryInputError as exc:
            raise InvalidParameterValue(f"Invalid value for parameter {exc}.") from None
        return action, params

    def _resources(self, action: str, params: dict[str, Any]) -> list[str]:
        """The ARNs a key policy is evaluated against: the alarms named, else "*"."""
        if action == "PutMetricAlarm" and isinstance(params.get("AlarmName"), str):
            return [alarm_arn(self._region, self._account_id, params["AlarmName"])]
        if action == "DeleteAlarms" and isinstance(params.get("AlarmNames"), list):
            return [
                alarm_arn(self._region, self._account_id, str(name))
                for name in params["AlarmNames"]
            ] or ["*"]
        return ["*"]


class SerializationException(ServiceError):
    code = "SerializationException"
    status = 400


class MissingAction(ServiceError):
    code = "MissingAction"
    status = 400
