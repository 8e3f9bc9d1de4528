"""Reading CloudWatch's query protocol and timestamps, writing its XML and CBOR."""

from __future__ import annotations

import datetime

import botocore.session
import cbor2
import pytest
from botocore.serialize import create_serializer

from sagequeue.domain.errors import InvalidParameterValue
from sagequeue.frontdoor.wire_shapes import (
    QueryInputError,
    encode_cbor,
    epoch_seconds,
    normalize,
    parse_query,
    query_xml_response,
)

MODEL = botocore.session.get_session().get_service_model("cloudwatch")


def as_query_pairs(operation: str, params: dict) -> list[tuple[str, str]]:
    """What botocore's own query serializer sends."""
    operation_model = MODEL.operation_model(operation)
    body = create_serializer("query").serialize_to_request(params, operation_model)["body"]
    return [(k, str(v)) for k, v in body.items()]


def test_query_input_reads_back_what_botocore_serialized() -> None:
    params = {
        "AlarmName": "a",
        "MetricName": "HasBacklogWithoutCapacity",
        "Namespace": "AWS/SageMaker",
        "Statistic": "Average",
        "Dimensions": [{"Name": "EndpointName", "Value": "ep"}],
        "Period": 60,
        "EvaluationPeriods": 2,
        "Threshold": 1.5,
        "ActionsEnabled": False,
        "AlarmActions": ["arn:1", "arn:2"],
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    }
    operation = MODEL.operation_model("PutMetricAlarm")
    assert parse_query(as_query_pairs("PutMetricAlarm", params), operation.input_shape) == params


def test_query_input_reads_nested_lists_of_structures() -> None:
    params = {
        "MetricDataQueries": [
            {
                "Id": "q1",
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/SageMaker", "MetricName": "Invocations"},
                    "Period": 60,
                    "Stat": "Sum",
                },
            }
        ],
        "StartTime": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        "EndTime": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC),
    }
    operation = MODEL.operation_model("GetMetricData")
    got = normalize(
        parse_query(as_query_pairs("GetMetricData", params), operation.input_shape),
        operation.input_shape,
        InvalidParameterValue,
    )
    assert got["MetricDataQueries"] == params["MetricDataQueries"]
    assert got["StartTime"] == params["StartTime"].timestamp()


def test_query_input_refuses_a_non_number_for_a_number() -> None:
    operation = MODEL.operation_model("PutMetricAlarm")
    with pytest.raises(QueryInputError):
        parse_query([("Period", "sixty")], operation.input_shape)


def test_timestamps_in_every_form_are_epoch_seconds() -> None:
    assert epoch_seconds(1_700_000_000) == 1_700_000_000.0
    assert epoch_seconds("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert epoch_seconds(datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)) == (
        1_700_000_000.0
    )
    with pytest.raises(ValueError):
        epoch_seconds("yesterday")


def test_query_output_is_the_xml_botocore_parses() -> None:
    operation = MODEL.operation_model("GetMetricStatistics")
    body = query_xml_response(
        "GetMetricStatistics",
        {
            "Label": "Invocations",
            "Datapoints": [{"Timestamp": 1_700_000_000.0, "Sum": 3.0, "Unit": "None"}],
        },
        operation.output_shape,
        "http://monitoring.amazonaws.com/doc/2010-08-01/",
        "req-1",
    )
    from botocore.parsers import create_parser

    parsed = create_parser("query").parse(
        {"body": body, "headers": {}, "status_code": 200}, operation.output_shape
    )
    (datapoint,) = parsed["Datapoints"]
    assert datapoint["Sum"] == 3.0
    assert datapoint["Timestamp"].timestamp() == 1_700_000_000.0


def test_cbor_output_tags_timestamps() -> None:
    operation = MODEL.operation_model("GetMetricData")
    body = encode_cbor(
        {"MetricDataResults": [{"Id": "a", "Timestamps": [1.5], "Values": [2]}]},
        operation.output_shape,
    )
    decoded = cbor2.loads(body)
    (result,) = decoded["MetricDataResults"]
    assert result["Values"] == [2.0]
    assert isinstance(result["Timestamps"][0], datetime.datetime)
