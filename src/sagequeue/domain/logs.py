"""Model logs as SageMaker writes them to CloudWatch Logs: names, ARNs and filter
patterns. Pure: no I/O.

* Log group ``/aws/sagemaker/Endpoints/<EndpointName>``.
* Per model instance, stream ``<VariantName>/<instance-id>`` (the model's stdout and
  stderr) and, as SageMaker writes for asynchronous endpoints,
  ``<VariantName>/<instance-id>/data-log`` (sagequeue's own lines: the instance's life,
  and each request with its inference id).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sagequeue.domain.errors import InvalidParameter

ENDPOINT_LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
DATA_LOG_SUFFIX = "/data-log"
# CloudWatch Logs takes events of up to 256 KiB; a longer line is cut in pieces this long.
MAX_MESSAGE_CHARS = 64 * 1024


def endpoint_log_group(endpoint_name: str) -> str:
    return ENDPOINT_LOG_GROUP_PREFIX + endpoint_name


def new_instance_id() -> str:
    """An id in EC2's form (``i-`` and 17 hex digits), new for every instance started."""
    return "i-" + secrets.token_hex(9)[:17]


def instance_log_stream(variant_name: str, instance_id: str) -> str:
    return f"{variant_name}/{instance_id}"


def data_log_stream(variant_name: str, instance_id: str) -> str:
    return instance_log_stream(variant_name, instance_id) + DATA_LOG_SUFFIX


def log_group_arn(region: str, account_id: str, group: str, *, trailing_star: bool) -> str:
    """DescribeLogGroups' ``arn`` ends in ``:*`` (the form IAM policies name for most
    actions); ``logGroupArn`` does not."""
    arn = f"arn:aws:logs:{region}:{account_id}:log-group:{group}"
    return arn + ":*" if trailing_star else arn


def log_stream_arn(region: str, account_id: str, group: str, stream: str) -> str:
    return f"{log_group_arn(region, account_id, group, trailing_star=False)}:log-stream:{stream}"


def split_message(message: str) -> list[str]:
    """A line as events: pieces of at most MAX_MESSAGE_CHARS (an empty line stays one)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return [message]
    return [
        message[start : start + MAX_MESSAGE_CHARS]
        for start in range(0, len(message), MAX_MESSAGE_CHARS)
    ]


# ------------------------------------------------------------------------ filter patterns


@dataclass(frozen=True, slots=True)
class _Term:
    text: str
    regex: re.Pattern[str] | None = None

    def found_in(self, message: str) -> bool:
        if self.regex is not None:
            return self.regex.search(message) is not None
        return self.text in message


def compile_filter_pattern(pattern: str | None) -> Callable[[str], bool]:
    """A predicate on event messages for a CloudWatch Logs filter pattern, in the forms
    that match unstructured text: terms that must all appear (case-sensitive),
    ``"quoted phrases"``, ``?term`` of which at least one must appear, ``-term`` that
    must not, and ``%regular expression%``. An empty pattern matches everything. JSON
    (``{...}``) and space-delimited (``[...]``) patterns are refused."""
    text = (pattern or "").strip()
    if not text:
        return lambda message: True
    if text[0] in "{[":
        raise InvalidParameter(
            "Invalid filter pattern: JSON ({...}) and space-delimited ([...]) filter "
            'patterns are not supported here; use terms, "phrases", ?term, -term or '
            "%regular expression%."
        )
    required: list[_Term] = []
    optional: list[_Term] = []
    excluded: list[_Term] = []
    for token in _tokens(text):
        kind, body = (token[0], token[1:]) if token[0] in "?-" and len(token) > 1 else ("", token)
        term = _term(body)
        {"": required, "?": optional, "-": excluded}[kind].append(term)

    def matches(message: str) -> bool:
        return (
            all(term.found_in(message) for term in required)
            and (not optional or any(term.found_in(message) for term in optional))
            and not any(term.found_in(message) for term in excluded)
        )

    return matches


def _tokens(text: str) -> list[str]:
    """Whitespace-separated tokens; a double-quoted part (with ``\\"`` escapes) or a
    ``%regular expression%`` may hold spaces and is kept whole."""
    tokens: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            if current:
                tokens.append("".join(current))
                current = []
            index += 1
            continue
        if char == '"' or (char == "%" and not current):
            # A quoted phrase, or a %regular expression%: whole, spaces and all.
            end = index + 1
            while end < len(text) and text[end] != char:
                end += 2 if char == '"' and text[end] == "\\" else 1
            if end >= len(text):
                raise InvalidParameter(f"Invalid filter pattern: unbalanced {char} in {text!r}.")
            current.append(text[index : end + 1])
            index = end + 1
            continue
        current.append(char)
        index += 1
    if current:
        tokens.append("".join(current))
    return tokens


def _term(body: str) -> _Term:
    if len(body) >= 2 and body[0] == body[-1] == '"':
        return _Term(body[1:-1].replace('\\"', '"').replace("\\\\", "\\"))
    if len(body) >= 2 and body[0] == body[-1] == "%":
        try:
            return _Term(body, re.compile(body[1:-1]))
        except re.error as exc:
            raise InvalidParameter(
                f"Invalid filter pattern: bad regular expression {body!r}: {exc}."
            ) from None
    return _Term(body)
