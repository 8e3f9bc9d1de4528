"""AWS CLI text rendering, ported from awscli/text.py (Apache-2.0, Amazon.com, Inc.)."""
# ruff: noqa
# Copyright 2012-2014 Amazon.com, Inc. or its affiliates. All Rights Reserved.

# Licensed under the Apache License, Version 2.0 (the "License"). You
# may not use this file except in compliance with the License. A copy of
# the License is located at

#     http://aws.amazon.com/apache2.0/

# or in the "license" file accompanying this file. This file is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF
# ANY KIND, either express or implied. See the License for the specific
# language governing permissions and limitations under the License.

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

# The values rendered are a parsed response (or what a --query made of it): JSON-like trees
# whose leaves are any scalar botocore produces (str, int, float, bool, None, datetime, ...).


def format_text(data: Any, stream: TextIO) -> None:
    _format_text(data, stream)


def _format_text(
    item: Any,
    stream: TextIO,
    identifier: str | None = None,
    scalar_keys: list[str] | None = None,
) -> None:
    if isinstance(item, dict):
        _format_dict(scalar_keys, item, identifier, stream)
    elif isinstance(item, list):
        _format_list(item, identifier, stream)
    else:
        # If it's not a list or a dict, we just write the scalar
        # value out directly.
        stream.write(str(item))
        stream.write("\n")


def _format_list(item: list[Any], identifier: str | None, stream: TextIO) -> None:
    if not item:
        return
    if any(isinstance(el, dict) for el in item):
        all_keys = _all_scalar_keys(item)
        for element in item:
            _format_text(
                element,
                stream=stream,
                identifier=identifier,
                scalar_keys=all_keys,
            )
    elif any(isinstance(el, list) for el in item):
        scalar_elements, non_scalars = _partition_list(item)
        if scalar_elements:
            _format_scalar_list(scalar_elements, identifier, stream)
        for non_scalar in non_scalars:
            _format_text(non_scalar, stream=stream, identifier=identifier)
    else:
        _format_scalar_list(item, identifier, stream)


def _partition_list(item: list[Any]) -> tuple[list[Any], list[Any]]:
    scalars: list[Any] = []
    non_scalars: list[Any] = []
    for element in item:
        if isinstance(element, (list, dict)):
            non_scalars.append(element)
        else:
            scalars.append(element)
    return scalars, non_scalars


def _format_scalar_list(elements: Iterable[Any], identifier: str | None, stream: TextIO) -> None:
    if identifier is not None:
        for item in elements:
            stream.write(f"{identifier.upper()}\t{item}\n")
    else:
        # For a bare list, just print the contents.
        stream.write("\t".join([str(item) for item in elements]))
        stream.write("\n")


def _format_dict(
    scalar_keys: list[str] | None,
    item: dict[str, Any],
    identifier: str | None,
    stream: TextIO,
) -> None:
    scalars, non_scalars = _partition_dict(item, scalar_keys=scalar_keys)
    if scalars:
        if identifier is not None:
            scalars.insert(0, identifier.upper())
        stream.write("\t".join(scalars))
        stream.write("\n")
    for new_identifier, non_scalar in non_scalars:
        _format_text(item=non_scalar, stream=stream, identifier=new_identifier)


def _all_scalar_keys(list_of_dicts: list[dict[str, Any]]) -> list[str]:
    keys_seen: set[str] = set()
    for item_dict in list_of_dicts:
        for key, value in item_dict.items():
            if not isinstance(value, (dict, list)):
                keys_seen.add(key)
    return list(sorted(keys_seen))


def _partition_dict(
    item_dict: dict[str, Any], scalar_keys: list[str] | None
) -> tuple[list[str], list[tuple[str, Any]]]:
    # Given a dictionary, partition it into two list based on the
    # values associated with the keys.
    # {'foo': 'scalar', 'bar': 'scalar', 'baz': ['not, 'scalar']}
    # scalar = [('foo', 'scalar'), ('bar', 'scalar')]
    # non_scalar = [('baz', ['not', 'scalar'])]
    scalar: list[str] = []
    non_scalar: list[tuple[str, Any]] = []
    if scalar_keys is None:
        # scalar_keys can have more than just the keys in the item_dict,
        # but if user does not provide scalar_keys, we'll grab the keys
        # from the current item_dict
        for key, value in sorted(item_dict.items()):
            if isinstance(value, (dict, list)):
                non_scalar.append((key, value))
            else:
                scalar.append(str(value))
    else:
        for key in scalar_keys:
            scalar.append(str(item_dict.get(key, "")))
        remaining_keys = sorted(set(item_dict.keys()) - set(scalar_keys))
        for remaining_key in remaining_keys:
            non_scalar.append((remaining_key, item_dict[remaining_key]))
    return scalar, non_scalar
