"""``--generate-cli-skeleton`` renderings, as AWS CLI v2 prints them.

``input`` is botocore's ArgumentGenerator dumped as JSON (indent 4). ``yaml-input`` is the same
skeleton in YAML, blobs as ``!!binary ''`` and an end-of-line comment per member:
``[REQUIRED]`` and the first sentence of the member's documentation. ``output`` is a sample
response whose values are the member names.
"""

from __future__ import annotations

import json
import re
import xml.dom.minidom
import xml.parsers.expat
from typing import Any

from botocore.model import OperationModel, Shape, StructureShape
from botocore.utils import ArgumentGenerator

_SENTENCE_DELIMITERS = re.compile(r"[.:]+")
_LINE_BREAK_CHARS = ("\n", "\u2028")


def input_shape(operation: OperationModel) -> StructureShape:
    """The operation's request structure (every operation the CLI drives has one)."""
    shape = operation.input_shape
    if shape is None:
        raise ValueError(f"{operation.name} has no input shape")
    return shape


def output_shape(operation: OperationModel) -> StructureShape:
    """The operation's response structure (every operation the CLI drives has one)."""
    shape = operation.output_shape
    if shape is None:
        raise ValueError(f"{operation.name} has no output shape")
    return shape


def input_skeleton_json(operation: OperationModel) -> str:
    skeleton = ArgumentGenerator().generate_skeleton(input_shape(operation))
    return json.dumps(skeleton, indent=4) + "\n"


def output_skeleton(operation: OperationModel) -> dict[str, Any]:
    return dict(ArgumentGenerator(use_member_names=True).generate_skeleton(output_shape(operation)))


def input_skeleton_yaml(operation: OperationModel) -> str:
    shape = input_shape(operation)
    lines = []
    commented_before = False
    for name, member in shape.members.items():
        line, commented = _yaml_member_line(
            name, member, name in shape.required_members, commented_before
        )
        commented_before = commented_before or commented
        lines.append(line)
    return "".join(lines)


def _yaml_member_line(
    name: str, member: Shape, required: bool, commented_before: bool
) -> tuple[str, bool]:
    """One ``key: value  # comment`` line; ruamel puts two spaces before the first comment
    of a map (no column to align to yet) and one before the others (aligned to column 0)."""
    value = {
        "string": "''",
        "integer": "0",
        "long": "0",
        "float": "0.0",
        "double": "0.0",
        "boolean": "true",
        "blob": "!!binary ''",
    }.get(member.type_name, "''")
    comment_parts = ["[REQUIRED]"] if required else []
    comment_parts.append(shape_doc_overview(member))
    # Only string shapes carry an enum in botocore's model.
    enum_values: list[str] | None = getattr(member, "enum", None)
    if enum_values:
        comment_parts.append("Valid values are: {}.".format(", ".join(enum_values)))
    comment = " ".join(comment_parts)
    if comment and not comment.isspace():
        gap = " " if commented_before else "  "
        return f"{name}: {value}{gap}# {comment}\n", True
    return f"{name}: {value}\n", False


def shape_doc_overview(shape: Shape) -> str:
    """First sentence of a shape's documentation, markup stripped (as the AWS CLI does)."""
    content = _strip_xml(shape.documentation)
    content = _SENTENCE_DELIMITERS.split(content, maxsplit=1)[0]
    if content:
        content += "."
    for char in _LINE_BREAK_CHARS:
        content = content.replace(char, " ")
    return content


def _strip_xml(documentation: str) -> str:
    try:
        dom = xml.dom.minidom.parseString(f"<doc>{documentation}</doc>")
    except xml.parsers.expat.ExpatError:
        return documentation
    parts: list[str] = []

    def collect(node: xml.dom.minidom.Node) -> None:
        for child in node.childNodes:
            if child.nodeType == node.TEXT_NODE:
                parts.append(child.data)
            else:
                collect(child)

    collect(dom)
    return "".join(parts)
