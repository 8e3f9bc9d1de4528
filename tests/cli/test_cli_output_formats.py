"""The five output renderings of an InvokeEndpointAsync response, with and without --query.

Goldens under golden/render-*.txt; text and table are also checked against the AWS CLI's own
formatters (awscli is a test dependency) for every JSON type a query can return.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import jmespath
import pytest

from cli.clitools import check_golden
from sagequeue.cli.awsoutput import OUTPUT_FORMATS, render

RESPONSE = {
    "ResponseMetadata": {"RequestId": "req-1", "HTTPStatusCode": 202},
    "OutputLocation": "s3://cli-tests/out/golden-1.out",
    "FailureLocation": "s3://cli-tests/failures/golden-1-error.out",
    "InferenceId": "golden-1",
}

# One query per JSON type a query result can have.
QUERIES = {
    "none": None,
    "string": "InferenceId",
    "number": "length(InferenceId)",
    "boolean": "contains(InferenceId, 'golden')",
    "null": "Missing",
    "list": "[InferenceId, OutputLocation]",
    "object": "{id: InferenceId, out: OutputLocation}",
    "list-of-objects": "[{id: InferenceId}, {id: OutputLocation, extra: FailureLocation}]",
    "nested-list": "[[InferenceId, OutputLocation], [FailureLocation, InferenceId]]",
    "empty-list": "[]",
}


def rendered(output: str, query_name: str) -> str:
    expression = QUERIES[query_name]
    query = jmespath.compile(expression) if expression else None
    return render(output, "InvokeEndpointAsync", dict(RESPONSE), query, color="off")


@pytest.mark.parametrize("query_name", sorted(QUERIES))
@pytest.mark.parametrize("output", OUTPUT_FORMATS)
def test_rendering_matches_golden(output: str, query_name: str) -> None:
    check_golden(f"render-{output}-{query_name}.txt", rendered(output, query_name))


def awscli_rendering(output: str, query_name: str) -> str:
    """The AWS CLI's own formatter on the same response."""
    formatter_module = pytest.importorskip("awscli.formatter")
    expression = QUERIES[query_name]
    args = SimpleNamespace(
        query=jmespath.compile(expression) if expression else None, color="off", paginate=False
    )
    formatter = formatter_module.get_formatter(output, args)
    stream = io.StringIO()
    formatter("InvokeEndpointAsync", dict(RESPONSE), stream)
    return stream.getvalue()


@pytest.mark.parametrize("query_name", sorted(QUERIES))
@pytest.mark.parametrize("output", ["text", "table"])
def test_text_and_table_match_the_aws_cli(output: str, query_name: str) -> None:
    assert rendered(output, query_name) == awscli_rendering(output, query_name)


@pytest.mark.parametrize("query_name", ["none", "string", "list", "object", "list-of-objects"])
def test_json_matches_the_aws_cli_for_non_falsy_results(query_name: str) -> None:
    assert rendered("json", query_name) == awscli_rendering("json", query_name)


def test_json_prints_null_for_a_null_query_result() -> None:
    # AWS CLI v2 prints every result except {}; v1 skipped all falsy ones.
    assert rendered("json", "null") == "null\n"


def test_yaml_stream_wraps_the_response_in_a_list() -> None:
    assert rendered("yaml-stream", "string") == "- golden-1\n"


def test_yaml_keeps_non_ascii_characters() -> None:
    output = render("yaml", "X", {"InferenceId": "café"}, None)
    assert output == "InferenceId: café\n"


def test_color_on_styles_table_rows() -> None:
    output = render("table", "InvokeEndpointAsync", dict(RESPONSE), None, color="on")
    assert "\x1b[1m\x1b[34m" in output
