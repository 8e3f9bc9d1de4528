"""Output renderings of AWS CLI v2: json, text, table, yaml and yaml-stream.

The text and table renderers are ports of the AWS CLI's own (awstext.py, awstable.py) so the
output matches character for character; JSON and YAML follow AWS CLI v2's formatter.py
(``json.dump(indent=4, ensure_ascii=False)``; ruamel's safe dumper, reproduced with PyYAML's
SafeDumper: block style, sorted keys, unicode kept).
"""

from __future__ import annotations

import io
import json
from typing import Any, TextIO

import jmespath.parser
import yaml

from sagequeue.cli import awstable, awstext

OUTPUT_FORMATS = ("json", "text", "table", "yaml", "yaml-stream")


def remove_response_metadata(response: dict[str, Any]) -> dict[str, Any]:
    """The AWS CLI shows ResponseMetadata only on errors."""
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def dump_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, allow_unicode=True, sort_keys=True)


def render_json(value: Any) -> str:
    if value == {}:
        return ""
    return json.dumps(value, indent=4, ensure_ascii=False) + "\n"


def render_text(value: Any) -> str:
    stream = io.StringIO()
    awstext.format_text(value, stream)
    return stream.getvalue()


def render_table(operation_name: str, value: Any, color: str) -> str:
    """``color`` is the effective on/off decision (``auto`` resolved by the caller)."""
    styler = awstable.ColorizedStyler() if color == "on" else awstable.Styler()
    table = awstable.MultiTable(initial_section=False, column_separator="|", styler=styler)
    builder = _TableBuilder(table)
    if not builder.build(operation_name, value):
        return ""
    stream = io.StringIO()
    table.render(stream)
    return stream.getvalue()


def render(
    output: str,
    operation_name: str,
    response: dict[str, Any],
    query: jmespath.parser.ParsedResult | None,
    color: str = "off",
) -> str:
    """Render an operation's parsed response exactly as ``aws --output <output>`` does."""
    value: Any = remove_response_metadata(response)
    if query is not None:
        value = query.search(value)
    if output == "json":
        return render_json(value)
    if output == "text":
        return render_text(value)
    if output == "table":
        return render_table(operation_name, value, color)
    if output == "yaml":
        return "" if value == {} else dump_yaml(value)
    if output == "yaml-stream":
        return dump_yaml([value])
    raise ValueError(f"Unknown output type: {output}")


class _TableBuilder:
    """The AWS CLI's TableFormatter._build_table and helpers, unchanged in behaviour."""

    def __init__(self, table: awstable.MultiTable) -> None:
        self.table = table

    def build(self, title: str | None, current: Any, indent_level: int = 0) -> bool:
        if not current:
            return False
        if title is not None:
            self.table.new_section(title, indent_level=indent_level)
        if isinstance(current, list):
            if isinstance(current[0], dict):
                self._sub_table_from_list(current, indent_level, title)
            else:
                for item in current:
                    if _is_scalar(item):
                        self.table.add_row([item])
                    elif all(_is_scalar(element) for element in item):
                        self.table.add_row(item)
                    else:
                        self.build(title=None, current=item)
        if isinstance(current, dict):
            self._sub_table_from_dict(current, indent_level)
        return True

    def _sub_table_from_dict(self, current: dict[str, Any], indent_level: int) -> None:
        headers, more = _group_scalar_keys(current)
        if len(headers) == 1:
            # A dict with a single scalar renders as a key/value row.
            self.table.add_row([headers[0], current[headers[0]]])
        elif headers:
            self.table.add_row_header(headers)
            self.table.add_row([current[key] for key in headers])
        for remaining in more:
            self.build(remaining, current[remaining], indent_level=indent_level + 1)

    def _sub_table_from_list(
        self, current: list[dict[str, Any]], indent_level: int, title: str | None
    ) -> None:
        header_set: set[str] = set()
        more_set: set[str] = set()
        for item in current:
            item_headers, item_more = _group_scalar_keys(item)
            header_set.update(item_headers)
            more_set.update(item_more)
        headers, more = sorted(header_set), sorted(more_set)
        self.table.add_row_header(headers)
        first = True
        for element in current:
            if not first and more:
                self.table.new_section(title, indent_level=indent_level)
                self.table.add_row_header(headers)
            first = False
            self.table.add_row([element.get(header, "") for header in headers])
            for remaining in more:
                if remaining in element:
                    self.build(remaining, element[remaining], indent_level=indent_level + 1)


def _is_scalar(element: Any) -> bool:
    return not isinstance(element, (list, dict))


def _group_scalar_keys(current: dict[str, Any]) -> tuple[list[str], list[str]]:
    headers = sorted(key for key in current if _is_scalar(current[key]))
    more = sorted(key for key in current if not _is_scalar(current[key]))
    return headers, more


def write_to(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()
