"""Integers as AWS reads them from the wire (sagequeue.domain.validation)."""

from __future__ import annotations

import pytest

from sagequeue.domain.validation import wire_hex, wire_int


@pytest.mark.parametrize("text,value", [("0", 0), ("600", 600), ("007", 7)])
def test_ascii_digits_are_integers(text: str, value: int) -> None:
    assert wire_int(text) == value


@pytest.mark.parametrize(
    "text", ["+600", "6_0_0", "\u0666\u0660\u0660", " 600", "600 ", "6.0", "0x10", "", "-5"]
)
def test_what_python_or_humans_also_read_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        wire_int(text)


def test_a_minus_sign_only_where_negative_values_are_meaningful() -> None:
    assert wire_int("-5", signed=True) == -5
    with pytest.raises(ValueError):
        wire_int("--5", signed=True)


def test_absurdly_long_numbers_are_refused_before_conversion() -> None:
    with pytest.raises(ValueError):
        wire_int("9" * 5000)


@pytest.mark.parametrize("text,value", [("0", 0), ("400", 1024), ("fF", 255)])
def test_hex_sizes(text: str, value: int) -> None:
    assert wire_hex(text) == value


@pytest.mark.parametrize("text", ["0x10", "+1", "1_0", "-1", "g", ""])
def test_hex_sizes_in_other_forms_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        wire_hex(text)
