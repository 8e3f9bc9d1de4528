"""InvokeEndpointAsync's rules and result locations (pure domain code)."""

from __future__ import annotations

import pytest

from sagequeue.domain.errors import ValidationError
from sagequeue.domain.invocation import (
    AsyncInvocationInput,
    result_locations,
    validate_invocation,
)
from sagequeue.domain.validation import java_pattern, validation_message


def invocation(**members: object) -> AsyncInvocationInput:
    fields: dict[str, object] = {"endpoint_name": "ep", "input_location": "s3://in/x.json"}
    fields.update(members)
    return AsyncInvocationInput(**fields)  # type: ignore[arg-type]


def error_of(**members: object) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_invocation(invocation(**members))
    return caught.value.message


def test_defaults_for_ttl_and_timeout() -> None:
    valid = validate_invocation(invocation())
    assert (valid.request_ttl_seconds, valid.invocation_timeout_seconds) == (21600, 900)


def test_inference_id_with_leading_space_is_refused_in_aws_wording() -> None:
    assert error_of(inference_id=" x") == (
        "1 validation error detected: Value ' x' at 'inferenceId' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: \\A\\S[\\p{Print}]*\\z"
    )


def test_inference_id_longer_than_64_is_refused() -> None:
    assert "Member must have length less than or equal to 64" in error_of(inference_id="a" * 65)


def test_inference_id_with_non_printable_character_is_refused() -> None:
    assert "at 'inferenceId'" in error_of(inference_id="a\tb")


def test_inference_id_of_printable_ascii_is_accepted() -> None:
    assert validate_invocation(invocation(inference_id="a b/c:d")).inference_id == "a b/c:d"


@pytest.mark.parametrize("name", ["-ep", "ep_1", "e" * 64, "ep-"])
def test_bad_endpoint_names_are_refused(name: str) -> None:
    assert "at 'endpointName'" in error_of(endpoint_name=name)


def test_endpoint_name_with_inner_dashes_is_accepted() -> None:
    assert validate_invocation(invocation(endpoint_name="a--b-1")).endpoint_name == "a--b-1"


@pytest.mark.parametrize("location", ["ftp://b/k", "s3://", "s3:///key", "b/k"])
def test_bad_input_locations_are_refused(location: str) -> None:
    assert "at 'inputLocation'" in error_of(input_location=location)


def test_https_input_location_is_accepted() -> None:
    assert validate_invocation(invocation(input_location="https://h/p")).input_location


def test_input_location_longer_than_1024_is_refused() -> None:
    assert "less than or equal to 1024" in error_of(input_location="s3://b/" + "k" * 1020)


@pytest.mark.parametrize("ttl", ["59", "21601"])
def test_ttl_out_of_range_is_refused(ttl: str) -> None:
    assert "at 'requestTTLSeconds'" in error_of(request_ttl_seconds=ttl)


def test_ttl_bounds_are_accepted() -> None:
    assert validate_invocation(invocation(request_ttl_seconds="60")).request_ttl_seconds == 60
    assert validate_invocation(invocation(request_ttl_seconds="21600")).request_ttl_seconds == 21600


@pytest.mark.parametrize("timeout", ["0", "3601"])
def test_invocation_timeout_out_of_range_is_refused(timeout: str) -> None:
    assert "at 'invocationTimeoutSeconds'" in error_of(invocation_timeout_seconds=timeout)


def test_non_numeric_ttl_is_refused() -> None:
    assert "Member must be an integer" in error_of(request_ttl_seconds="soon")


def test_custom_attributes_non_ascii_is_refused_without_echoing_the_value() -> None:
    message = error_of(custom_attributes="sécret")
    assert "at 'customAttributes'" in message
    assert "sécret" not in message


def test_custom_attributes_longer_than_1024_is_refused() -> None:
    assert "at 'customAttributes'" in error_of(custom_attributes="a" * 1025)


def test_non_ascii_content_type_is_refused() -> None:
    assert "at 'contentType'" in error_of(content_type="téxt/plain")


def test_non_ascii_accept_is_refused() -> None:
    assert "at 'accept'" in error_of(accept="téxt/plain")


@pytest.mark.parametrize("extension", ["s3:x", "https:y", "a b", "ä"])
def test_bad_output_path_extensions_are_refused(extension: str) -> None:
    assert "at 's3OutputPathExtension'" in error_of(s3_output_path_extension=extension)


@pytest.mark.parametrize("filename", ["a.b.c", ".hidden", "a" * 33, "a/b"])
def test_bad_filenames_are_refused(filename: str) -> None:
    assert "at 'filename'" in error_of(filename=filename)


def test_filename_with_one_dot_is_accepted() -> None:
    assert validate_invocation(invocation(filename="result-1.json")).filename == "result-1.json"


def test_body_and_input_location_together_are_refused() -> None:
    assert "mutually exclusive" in error_of(body=b"{}")


def test_neither_body_nor_input_location_is_refused() -> None:
    assert "exactly one" in error_of(input_location=None)


def test_body_of_128000_bytes_is_accepted() -> None:
    valid = validate_invocation(invocation(input_location=None, body=b"x" * 128_000))
    assert valid.body is not None and len(valid.body) == 128_000


def test_body_over_128000_bytes_is_refused() -> None:
    message = error_of(input_location=None, body=b"x" * 128_001)
    assert "at 'body'" in message and "128000" in message


def test_all_violations_are_reported_together() -> None:
    message = error_of(inference_id=" x", request_ttl_seconds="1")
    assert message.startswith("2 validation errors detected: ")
    assert "'inferenceId'" in message and "'requestTTLSeconds'" in message


def test_validation_message_counts_errors() -> None:
    assert validation_message(["a"]) == "1 validation error detected: a"
    assert validation_message(["a", "b"]) == "2 validation errors detected: a; b"


def test_java_pattern_matches_whole_value() -> None:
    pattern = java_pattern("[a-z]+")
    assert pattern is not None
    assert pattern.fullmatch("abc") and not pattern.fullmatch("abc1")


def test_java_pattern_python_cannot_express_is_not_enforced() -> None:
    assert java_pattern(r"[\p{L}\p{Z}]*") is None


def test_output_location_uses_the_file_name_with_out_suffix() -> None:
    locations = result_locations("s3://out/results", None, "abc")
    assert locations.output_location == "s3://out/results/abc.out"


def test_failure_location_defaults_to_output_path_with_error_suffix() -> None:
    locations = result_locations("s3://out/results", None, "abc")
    assert locations.failure_location == "s3://out/results/abc-error.out"


def test_failure_location_uses_the_failure_path() -> None:
    locations = result_locations("s3://out/results", "s3://fail/", "abc")
    assert locations.failure_location == "s3://fail/abc-error.out"


def test_locations_insert_the_extension_without_double_slashes() -> None:
    locations = result_locations("s3://out/results/", "s3://fail/f/", "abc", "/day/1/")
    assert locations.output_location == "s3://out/results/day/1/abc.out"
    assert locations.failure_location == "s3://fail/f/day/1/abc-error.out"


def test_locations_under_a_bucket_root() -> None:
    assert result_locations("s3://out", None, "n").output_location == "s3://out/n.out"
