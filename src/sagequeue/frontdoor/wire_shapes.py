"""Reading and writing botocore shapes in the AWS wire protocols that are not plain JSON:
``query`` (form-encoded input, XML output), ``smithy-rpc-v2-cbor``, and timestamps in any
of them. Driven by the service model, the way botocore's own serializers and parsers
are, but from the server's side."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import cbor2

from sagequeue.domain.errors import ServiceError

# ======================================================================================
# Timestamps
# ======================================================================================


def epoch_seconds(value: Any) -> float:
    """A timestamp as sent: epoch seconds (number or numeric text), ISO 8601 text, or a
    datetime (CBOR tag 1). Raises ValueError."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return float(moment.timestamp())
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(value)
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise ValueError(value)


def iso8601(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def normalize(value: Any, shape: Any, bad: type[ServiceError], path: str = "") -> Any:
    """``value`` with every timestamp member turned into epoch seconds (a bad timestamp
    raises ``bad``); other members are left as they are, for the validator."""
    kind = shape.type_name
    if value is None:
        return None
    if kind == "timestamp":
        try:
            return epoch_seconds(value)
        except (ValueError, OverflowError, OSError):
            raise bad(f"The parameter {path or shape.name} must be a timestamp.") from None
    if kind == "structure" and isinstance(value, dict):
        members = shape.members
        return {
            key: normalize(item, members[key], bad, key) if key in members else item
            for key, item in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [normalize(item, shape.member, bad, path) for item in value]
    if kind == "map" and isinstance(value, dict):
        return {key: normalize(item, shape.value, bad, path) for key, item in value.items()}
    return value


# ======================================================================================
# query: form-encoded input
# ======================================================================================


class QueryInputError(ValueError):
    """A query parameter that cannot be read as its shape says."""


def parse_query(pairs: Iterable[tuple[str, str]], shape: Any) -> dict[str, Any]:
    """The input structure of ``Action=...&A.member.1.B=x...`` (``Action`` and
    ``Version`` excluded)."""
    tree: dict[str, Any] = {}
    for key, value in pairs:
        if key in ("Action", "Version"):
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {"": child}
            node = child
        last = parts[-1]
        if isinstance(node.get(last), dict):
            node[last][""] = value
        else:
            node[last] = value
    if shape is None:
        return {}
    return _from_tree(tree, shape, "") or {}


def _from_tree(node: Any, shape: Any, path: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(node, dict):
            raise QueryInputError(f"{path} must be a structure")
        result = {}
        for name, member in shape.members.items():
            wire = member.serialization.get("name", name)
            if wire in node:
                result[name] = _from_tree(node[wire], member, f"{path}.{wire}".lstrip("."))
        return result
    if kind == "list":
        if isinstance(node, str):
            if node == "":
                return []
            raise QueryInputError(f"{path} must be a list")
        flattened = shape.serialization.get("flattened")
        items = node if flattened else node.get("member", {})
        if isinstance(items, str):
            raise QueryInputError(f"{path} must be a list")
        return [
            _from_tree(items[index], shape.member, f"{path}.member.{index}")
            for index in sorted((k for k in items if k.isdigit()), key=int)
        ]
    if kind == "map":
        entries = node.get("entry", {}) if isinstance(node, dict) else {}
        result = {}
        for index in sorted((k for k in entries if k.isdigit()), key=int):
            entry = entries[index]
            if isinstance(entry, dict) and "key" in entry:
                result[entry["key"]] = _from_tree(entry.get("value", ""), shape.value, path)
        return result
    if isinstance(node, dict):
        node = node.get("", "")
    if kind in ("integer", "long"):
        try:
            return int(node)
        except ValueError:
            raise QueryInputError(f"{path} must be an integer") from None
    if kind in ("double", "float"):
        try:
            return float(node)
        except ValueError:
            raise QueryInputError(f"{path} must be a number") from None
    if kind == "boolean":
        if node.lower() not in ("true", "false"):
            raise QueryInputError(f"{path} must be true or false")
        return node.lower() == "true"
    if kind == "blob":
        return base64.b64decode(node)
    return node


# ======================================================================================
# query: XML output
# ======================================================================================


def query_xml_response(
    action: str, result: dict[str, Any] | None, shape: Any, namespace: str, request_id: str
) -> bytes:
    body = f"<{action}Result>" if shape is not None else ""
    if shape is not None:
        body += _xml_members(result or {}, shape)
        body += f"</{action}Result>"
    return (
        f'<{action}Response xmlns="{namespace}">{body}'
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    ).encode()


def _xml_members(value: dict[str, Any], shape: Any) -> str:
    out = []
    for name, member in shape.members.items():
        if name in value and value[name] is not None:
            tag = member.serialization.get("name", name)
            out.append(f"<{tag}>{_xml_value(value[name], member)}</{tag}>")
    return "".join(out)


def _xml_value(value: Any, shape: Any) -> str:
    kind = shape.type_name
    if kind == "structure":
        return _xml_members(value, shape)
    if kind == "list":
        return "".join(f"<member>{_xml_value(item, shape.member)}</member>" for item in value)
    if kind == "map":
        return "".join(
            f"<entry><key>{escape(str(k))}</key><value>{_xml_value(v, shape.value)}</value></entry>"
            for k, v in value.items()
        )
    if kind == "timestamp":
        return iso8601(float(value))
    if kind == "boolean":
        return "true" if value else "false"
    if kind in ("double", "float"):
        return repr(float(value))
    return escape(str(value))


def query_xml_error(
    code: str, message: str, sender: bool, namespace: str, request_id: str
) -> bytes:
    kind = "Sender" if sender else "Receiver"
    return (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{kind}</Type><Code>{escape(code)}'
        f"</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()


# ======================================================================================
# smithy-rpc-v2-cbor
# ======================================================================================


def decode_cbor(body: bytes) -> Any:
    return cbor2.loads(body)


def encode_cbor(value: Any, shape: Any) -> bytes:
    return cbor2.dumps(_cbor_value(value, shape) if shape is not None else {})


def _cbor_value(value: Any, shape: Any) -> Any:
    kind = shape.type_name
    if value is None:
        return None
    if kind == "structure":
        return {
            name: _cbor_value(value[name], member)
            for name, member in shape.members.items()
            if name in value and value[name] is not None
        }
    if kind == "list":
        return [_cbor_value(item, shape.member) for item in value]
    if kind == "map":
        return {k: _cbor_value(v, shape.value) for k, v in value.items()}
    if kind == "timestamp":
        return cbor2.CBORTag(1, float(value))
    if kind in ("double", "float"):
        return float(value)
    return value
