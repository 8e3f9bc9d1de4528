"""AWS CLI table rendering, ported from awscli/table.py (Apache-2.0, Amazon.com, Inc.).

Kept as close to the original as possible so output matches the AWS CLI character for
character; only the colorama dependency was replaced by raw ANSI sequences.
"""
# ruff: noqa
# Copyright 2012-2013 Amazon.com, Inc. or its affiliates. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"). You
# may not use this file except in compliance with the License. A copy of
# the License is located at
#
#     http://aws.amazon.com/apache2.0/
#
# or in the "license" file accompanying this file. This file is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF
# ANY KIND, either express or implied. See the License for the specific
# language governing permissions and limitations under the License.

from __future__ import annotations

import struct
import sys
import unicodedata


import os
from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class TextSink(Protocol):
    """Where a table is written: a text stream, or an IndentedStream around one."""

    def write(self, text: str, /) -> object: ...


class _Ansi:
    """The ANSI sequences colorama would emit (kept dependency-free)."""

    BRIGHT = "\x1b[1m"
    DIM = "\x1b[2m"
    RESET_ALL = "\x1b[0m"
    BLUE = "\x1b[34m"
    YELLOW = "\x1b[33m"
    GREEN = "\x1b[32m"


def is_a_tty() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except Exception:
        return False


def get_text_length(text: object) -> int:
    # `len(unichar)` measures the number of characters, so we use
    # `unicodedata.east_asian_width` to measure the length of characters.
    # Following responses are considered to be full-width length.
    # * A(Ambiguous)
    # * F(Fullwidth)
    # * W(Wide)
    text = str(text)
    return sum(2 if unicodedata.east_asian_width(char) in "WFA" else 1 for char in text)


def determine_terminal_width(default_width: int = 80) -> int:
    # If we can't detect the terminal width, the default_width is returned.
    try:
        from fcntl import ioctl
        from termios import TIOCGWINSZ
    except ImportError:
        return default_width
    try:
        height, width = struct.unpack("hhhh", ioctl(sys.stdout, TIOCGWINSZ, b"\000" * 8))[0:2]
    except Exception:
        return default_width
    else:
        return int(width)


def center_text(
    text: str,
    length: int = 80,
    left_edge: str = "|",
    right_edge: str = "|",
    text_length: int | None = None,
) -> str:
    """Center text with specified edge chars.

    You can pass in the length of the text as an arg, otherwise it is computed
    automatically for you.  This can allow you to center a string not based
    on it's literal length (useful if you're using ANSI codes).
    """
    # postcondition: get_text_length(returned_text) == length
    if text_length is None:
        text_length = get_text_length(text)
    output = []
    char_start = (length // 2) - (text_length // 2) - 1
    output.append(left_edge + " " * char_start + text)
    length_so_far = get_text_length(left_edge) + char_start + text_length
    right_side_spaces = length - get_text_length(right_edge) - length_so_far
    output.append(" " * right_side_spaces)
    output.append(right_edge)
    final = "".join(output)
    return final


def align_left(
    text: str,
    length: int,
    left_edge: str = "|",
    right_edge: str = "|",
    text_length: int | None = None,
    left_padding: int = 2,
) -> str:
    """Left align text."""
    # postcondition: get_text_length(returned_text) == length
    if text_length is None:
        text_length = get_text_length(text)
    computed_length = (
        text_length + left_padding + get_text_length(left_edge) + get_text_length(right_edge)
    )
    if length - computed_length >= 0:
        padding = left_padding
    else:
        padding = 0
    output = []
    length_so_far = 0
    output.append(left_edge)
    length_so_far += len(left_edge)
    output.append(" " * padding)
    length_so_far += padding
    output.append(text)
    length_so_far += text_length
    output.append(" " * (length - length_so_far - len(right_edge)))
    output.append(right_edge)
    return "".join(output)


def convert_to_vertical_table(sections: list[Section]) -> None:
    # Any section that only has a single row is
    # inverted, so:
    # header1 | header2 | header3
    # val1    | val2    | val2
    #
    # becomes:
    #
    # header1 | val1
    # header2 | val2
    # header3 | val3
    for i, section in enumerate(sections):
        if len(section.rows) == 1 and section.headers:
            headers = section.headers
            new_section = Section()
            new_section.title = section.title
            new_section.indent_level = section.indent_level
            for header, element in zip(headers, section.rows[0]):
                new_section.add_row([header, element])
            sections[i] = new_section


class IndentedStream:
    def __init__(
        self,
        stream: TextSink,
        indent_level: int,
        left_indent_char: str = "|",
        right_indent_char: str = "|",
    ) -> None:
        self._stream = stream
        self._indent_level = indent_level
        self._left_indent_char = left_indent_char
        self._right_indent_char = right_indent_char

    def write(self, text: str) -> None:
        self._stream.write(self._left_indent_char * self._indent_level)
        if text.endswith("\n"):
            self._stream.write(text[:-1])
            self._stream.write(self._right_indent_char * self._indent_level)
            self._stream.write("\n")
        else:
            self._stream.write(text)

    def __getattr__(self, attr: str) -> object:
        return getattr(self._stream, attr)


class Styler:
    def style_title(self, text: str) -> str:
        return text

    def style_header_column(self, text: str) -> str:
        return text

    def style_row_element(self, text: str) -> str:
        return text

    def style_indentation_char(self, text: str) -> str:
        return text


class ColorizedStyler(Styler):
    def __init__(self) -> None:
        pass

    def style_title(self, text: str) -> str:
        # Originally bold + underline
        return text

    def style_header_column(self, text: str) -> str:
        # Originally underline
        return text

    def style_row_element(self, text: str) -> str:
        return _Ansi.BRIGHT + _Ansi.BLUE + text + _Ansi.RESET_ALL

    def style_indentation_char(self, text: str) -> str:
        return _Ansi.DIM + _Ansi.YELLOW + text + _Ansi.RESET_ALL


class MultiTable:
    def __init__(
        self,
        terminal_width: int | None = None,
        initial_section: bool = True,
        column_separator: str = "|",
        terminal: object = None,
        styler: Styler | None = None,
        auto_reformat: bool = True,
    ) -> None:
        self._auto_reformat = auto_reformat
        self._current_section: Section | None
        self._sections: list[Section]
        if initial_section:
            self._current_section = Section()
            self._sections = [self._current_section]
        else:
            self._current_section = None
            self._sections = []
        self._styler: Styler
        if styler is None:
            # Move out to factory.
            if is_a_tty():
                self._styler = ColorizedStyler()
            else:
                self._styler = Styler()
        else:
            self._styler = styler
        self._rendering_index = 0
        self._column_separator = column_separator
        if terminal_width is None:
            self._terminal_width = determine_terminal_width()

    # Callers open a section (new_section) before adding to it when initial_section=False.
    def add_title(self, title: str | None) -> None:
        assert self._current_section is not None
        self._current_section.add_title(title)

    def add_row_header(self, headers: list[str]) -> None:
        assert self._current_section is not None
        self._current_section.add_header(headers)

    def add_row(self, row_elements: Sequence[Any]) -> None:
        assert self._current_section is not None
        self._current_section.add_row(row_elements)

    def new_section(self, title: str | None, indent_level: int = 0) -> None:
        self._current_section = Section()
        self._sections.append(self._current_section)
        self._current_section.add_title(title)
        self._current_section.indent_level = indent_level

    def render(self, stream: TextSink) -> None:
        max_width = self._calculate_max_width()
        should_convert_table = self._determine_conversion_needed(max_width)
        if should_convert_table:
            convert_to_vertical_table(self._sections)
            max_width = self._calculate_max_width()
        stream.write("-" * max_width + "\n")
        for section in self._sections:
            self._render_section(section, max_width, stream)

    def _determine_conversion_needed(self, max_width: int) -> bool | None:
        # If we don't know the width of the controlling terminal,
        # then we don't try to resize the table.
        if max_width > self._terminal_width:
            return self._auto_reformat
        return None

    def _calculate_max_width(self) -> int:
        max_width = max(
            s.total_width(padding=4, with_border=True, outer_padding=s.indent_level)
            for s in self._sections
        )
        return max_width

    def _render_section(self, section: Section, max_width: int, stream: TextSink) -> None:
        stream = IndentedStream(
            stream,
            section.indent_level,
            self._styler.style_indentation_char("|"),
            self._styler.style_indentation_char("|"),
        )
        max_width -= section.indent_level * 2
        self._render_title(section, max_width, stream)
        self._render_column_titles(section, max_width, stream)
        self._render_rows(section, max_width, stream)

    def _render_title(self, section: Section, max_width: int, stream: TextSink) -> None:
        # The title consists of:
        # title        :  |   This is the title      |
        # bottom_border:  ----------------------------
        if section.title:
            title = self._styler.style_title(section.title)
            stream.write(
                center_text(title, max_width, "|", "|", get_text_length(section.title)) + "\n"
            )
            if not section.headers and not section.rows:
                stream.write("+%s+" % ("-" * (max_width - 2)) + "\n")

    def _render_column_titles(self, section: Section, max_width: int, stream: TextSink) -> None:
        if not section.headers:
            return
        # In order to render the column titles we need to know
        # the width of each of the columns.
        widths = section.calculate_column_widths(padding=4, max_width=max_width)
        # TODO: Built a list instead of +=, it's more efficient.
        current = ""
        length_so_far = 0
        # The first cell needs both left and right edges '|  foo  |'
        # while subsequent cells only need right edges '  foo  |'.
        first = True
        for width, header in zip(widths, section.headers):
            stylized_header = self._styler.style_header_column(header)
            if first:
                left_edge = "|"
                first = False
            else:
                left_edge = ""
            current += center_text(
                text=stylized_header,
                length=width,
                left_edge=left_edge,
                right_edge="|",
                text_length=get_text_length(header),
            )
            length_so_far += width
        self._write_line_break(stream, widths)
        stream.write(current + "\n")

    def _write_line_break(self, stream: TextSink, widths: list[int]) -> None:
        # Write out something like:
        # +-------+---------+---------+
        parts = []
        first = True
        for width in widths:
            if first:
                parts.append("+%s+" % ("-" * (width - 2)))
                first = False
            else:
                parts.append("%s+" % ("-" * (width - 1)))
        parts.append("\n")
        stream.write("".join(parts))

    def _render_rows(self, section: Section, max_width: int, stream: TextSink) -> None:
        if not section.rows:
            return
        widths = section.calculate_column_widths(padding=4, max_width=max_width)
        if not widths:
            return
        self._write_line_break(stream, widths)
        for row in section.rows:
            # TODO: Built the string in a list then join instead of using +=,
            # it's more efficient.
            current = ""
            length_so_far = 0
            first = True
            for width, element in zip(widths, row):
                if first:
                    left_edge = "|"
                    first = False
                else:
                    left_edge = ""
                stylized = self._styler.style_row_element(element)
                current += align_left(
                    text=stylized,
                    length=width,
                    left_edge=left_edge,
                    right_edge=self._column_separator,
                    text_length=get_text_length(element),
                )
                length_so_far += width
            stream.write(current + "\n")
        self._write_line_break(stream, widths)


class Section:
    def __init__(self) -> None:
        # None when a list of dicts without a title spans several sections (see awsoutput).
        self.title: str | None = ""
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self.indent_level = 0
        self._num_cols: int | None = None
        self._max_widths: list[int] = []

    def __repr__(self) -> str:
        return (
            f"Section(title={self.title}, headers={self.headers}, "
            f"indent_level={self.indent_level}, num_rows={len(self.rows)})"
        )

    def calculate_column_widths(self, padding: int = 0, max_width: int | None = None) -> list[int]:
        # postcondition: sum(widths) == max_width
        unscaled_widths = [w + padding for w in self._max_widths]
        if max_width is None:
            return unscaled_widths
        if not unscaled_widths:
            return unscaled_widths
        else:
            # Compute scale factor for max_width.
            scale_factor = max_width / float(sum(unscaled_widths))
            scaled = [int(round(scale_factor * w)) for w in unscaled_widths]
            # Once we've scaled the columns, we may be slightly over/under
            # the amount we need so we have to adjust the columns.
            off_by = sum(scaled) - max_width
            while off_by != 0:
                iter_order: Iterable[int] = range(len(scaled))
                if off_by < 0:
                    iter_order = reversed(range(len(scaled)))
                for i in iter_order:
                    if off_by > 0:
                        scaled[i] -= 1
                        off_by -= 1
                    else:
                        scaled[i] += 1
                        off_by += 1
                    if off_by == 0:
                        break
            return scaled

    def total_width(
        self, padding: int = 0, with_border: bool = False, outer_padding: int = 0
    ) -> int:
        total = 0
        # One char on each side == 2 chars total to the width.
        border_padding = 2
        for w in self.calculate_column_widths():
            total += w + padding
        if with_border:
            total += border_padding
        total += outer_padding + outer_padding
        return max(
            get_text_length(self.title) + border_padding + outer_padding + outer_padding,
            total,
        )

    def add_title(self, title: str | None) -> None:
        self.title = title

    def add_header(self, headers: list[str]) -> None:
        self._update_max_widths(headers)
        if self._num_cols is None:
            self._num_cols = len(headers)
        self.headers = self._format_headers(headers)

    def _format_headers(self, headers: list[str]) -> list[str]:
        return headers

    def add_row(self, row: Sequence[Any]) -> None:
        if self._num_cols is None:
            self._num_cols = len(row)
        if len(row) != self._num_cols:
            raise ValueError(
                f"Row should have {self._num_cols} elements, instead it has {len(row)}"
            )
        formatted = self._format_row(row)
        self.rows.append(formatted)
        self._update_max_widths(formatted)

    def _format_row(self, row: Sequence[Any]) -> list[str]:
        return [str(r) for r in row]

    def _update_max_widths(self, row: list[str]) -> None:
        if not self._max_widths:
            self._max_widths = [get_text_length(el) for el in row]
        else:
            for i, el in enumerate(row):
                self._max_widths[i] = max(get_text_length(el), self._max_widths[i])
