"""Input validation rules taken from the AWS service models, with AWS's own wording.

AWS reports constraint violations as one message listing every violation::

    1 validation error detected: Value 'x' at 'inferenceId' failed to satisfy
    constraint: Member must satisfy regular expression pattern: \\A\\S[\\p{Print}]*\\z

Rules are compiled once (patterns translated from Java regex syntax) and then checked
with plain comparisons, because the runtime API runs them on every request. Pure: no
I/O. Shapes are passed in by the caller (botocore ``Shape`` objects, duck-typed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sagequeue.domain.errors import ServiceError

# Java regex classes used by the SageMaker models that Python's ``re`` lacks.
_JAVA_CLASSES = {
    r"\p{ASCII}": r"\x00-\x7F",
    r"\p{Print}": r"\x20-\x7E",
}


def java_pattern(pattern: str) -> re.Pattern[str] | None:
    """Compile an AWS model pattern (Java syntax, matched against the whole value).

    Returns None for a pattern Python cannot express (e.g. ``\\p{L}``): such a rule is
    not enforced rather than enforced wrongly.
    """
    translated = pattern.replace(r"\z", r"\Z")
    for java, python in _JAVA_CLASSES.items():
        # Inside a character class the range is spliced in; alone it becomes a class.
        translated = translated.replace(f"[{java}]", f"[{python}]")
        translated = translated.replace(java, f"[{python}]")
    try:
        return re.compile(translated, re.DOTALL)
    except re.error:
        return None


def member_path(name: str) -> str:
    """AWS names members in messages lower-camel-cased: ``InferenceId`` -> ``inferenceId``."""
    return name[:1].lower() + name[1:]


def _quote(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    return f"'{value}'"


def violation(value: Any, path: str, constraint: str, sensitive: bool = False) -> str:
    """One violation; a sensitive member's value is never echoed (as AWS does)."""
    shown = "" if sensitive else f" {_quote(value)}"
    return f"Value{shown} at '{path}' failed to satisfy constraint: {constraint}"


def validation_message(violations: list[str]) -> str:
    count = len(violations)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(violations)


def raise_if_invalid(violations: list[str], error: type[ServiceError]) -> None:
    if violations:
        raise error(validation_message(violations))


# ======================================================================================
# Integers on the wire
# ======================================================================================

_DECIMAL = re.compile(r"-?[0-9]+", re.ASCII)
_UNSIGNED_DECIMAL = re.compile(r"[0-9]+", re.ASCII)
_HEX = re.compile(r"[0-9a-fA-F]+", re.ASCII)
# Far past any count AWS takes: bounds the work of converting an attacker's digits.
_MAX_DIGITS = 64


def wire_int(text: str, *, signed: bool = False) -> int:
    """An integer as AWS reads one from a header, query parameter or XML element: ASCII
    digits only, with a leading '-' only where ``signed``. Python's ``int()`` would also
    take '+600', '6_0_0', surrounding blanks and non-ASCII digits; AWS takes none of them.
    Raises ValueError."""
    pattern = _DECIMAL if signed else _UNSIGNED_DECIMAL
    if len(text) > _MAX_DIGITS or pattern.fullmatch(text) is None:
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


def wire_hex(text: str) -> int:
    """A hexadecimal size (aws-chunked chunk sizes): ASCII hex digits only, no '0x',
    sign or '_'. Raises ValueError."""
    if len(text) > _MAX_DIGITS or _HEX.fullmatch(text) is None:
        raise ValueError(f"not a hexadecimal number: {text!r}")
    return int(text, 16)


# ======================================================================================
# Single-member rules (the runtime API's flat members)
# ======================================================================================


@dataclass(slots=True, frozen=True)
class StringRule:
    """Length and pattern constraints of one string member."""

    path: str  # as named in messages, e.g. "inferenceId"
    min_length: int | None = None
    max_length: int | None = None
    pattern_text: str | None = None
    pattern: re.Pattern[str] | None = None
    sensitive: bool = False

    @classmethod
    def of(
        cls,
        path: str,
        *,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        sensitive: bool = False,
    ) -> StringRule:
        return cls(
            path,
            min_length,
            max_length,
            pattern,
            java_pattern(pattern) if pattern is not None else None,
            sensitive,
        )

    def check(self, value: str, violations: list[str]) -> None:
        size = len(value)
        if self.min_length is not None and size < self.min_length:
            violations.append(
                violation(
                    value,
                    self.path,
                    f"Member must have length greater than or equal to {self.min_length}",
                    self.sensitive,
                )
            )
        if self.max_length is not None and size > self.max_length:
            violations.append(
                violation(
                    value,
                    self.path,
                    f"Member must have length less than or equal to {self.max_length}",
                    self.sensitive,
                )
            )
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            violations.append(
                violation(
                    value,
                    self.path,
                    f"Member must satisfy regular expression pattern: {self.pattern_text}",
                    self.sensitive,
                )
            )


@dataclass(slots=True, frozen=True)
class IntegerRule:
    path: str
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: int | float, violations: list[str]) -> None:
        if self.minimum is not None and value < self.minimum:
            violations.append(
                violation(
                    value,
                    self.path,
                    f"Member must have value greater than or equal to {self.minimum}",
                )
            )
        if self.maximum is not None and value > self.maximum:
            violations.append(
                violation(
                    value,
                    self.path,
                    f"Member must have value less than or equal to {self.maximum}",
                )
            )


# ======================================================================================
# Whole-shape validation from a service model (the control plane's nested inputs)
# ======================================================================================

_Check = Callable[[Any, str, list[str]], None]


@dataclass(slots=True)
class ShapeValidator:
    """Validates a decoded JSON document against a botocore input shape: required
    members, types, lengths, ranges, enums and patterns, recursively. Compiled once
    per shape; unknown members are not checked (botocore's own validator refuses them
    client-side and SageMaker ignores them): ``prune`` drops them."""

    shape: Any
    # Checks that replace the model's for the strings of a shape name (e.g. topics that
    # may also be webhook URLs where the model allows only SNS ARNs).
    overrides: Mapping[str, _Check] = field(default_factory=dict)
    _cache: dict[str, _Check] = field(default_factory=dict)
    _prune_cache: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    def validate(self, params: Mapping[str, Any]) -> list[str]:
        violations: list[str] = []
        self._check_for(self.shape)(params, "", violations)
        return violations

    def prune(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``params`` holding only the members the model defines, at every
        level: unknown members are dropped (as SageMaker ignores them), so they are
        never stored or echoed back."""
        pruned: dict[str, Any] = self._prune_for(self.shape)(params)
        return pruned

    def _prune_for(self, shape: Any) -> Callable[[Any], Any]:
        prune = self._prune_cache.get(shape.name)
        if prune is None:
            # Placeholder first, so recursive shapes terminate.
            self._prune_cache[shape.name] = lambda value: self._prune_cache[shape.name](value)
            prune = self._compile_prune(shape)
            self._prune_cache[shape.name] = prune
        return prune

    def _compile_prune(self, shape: Any) -> Callable[[Any], Any]:
        kind = shape.type_name
        if kind == "structure":
            members = [(name, self._prune_for(member)) for name, member in shape.members.items()]

            def prune_structure(value: Any) -> Any:
                if not isinstance(value, Mapping):
                    return value
                return {name: prune(value[name]) for name, prune in members if name in value}

            return prune_structure
        if kind == "list":
            prune_item = self._prune_for(shape.member)
            return lambda value: (
                [prune_item(item) for item in value] if isinstance(value, list) else value
            )
        if kind == "map":
            prune_value = self._prune_for(shape.value)
            return lambda value: (
                {key: prune_value(item) for key, item in value.items()}
                if isinstance(value, Mapping)
                else value
            )
        return lambda value: value

    def _check_for(self, shape: Any) -> _Check:
        check = self._cache.get(shape.name)
        if check is None:
            # Placeholder first, so recursive shapes terminate.
            self._cache[shape.name] = lambda value, path, out: self._cache[shape.name](
                value, path, out
            )
            check = self._compile(shape)
            self._cache[shape.name] = check
        return check

    def _compile(self, shape: Any) -> _Check:
        override = self.overrides.get(shape.name)
        if override is not None:
            return override
        kind = shape.type_name
        meta = shape.metadata
        if kind == "structure":
            return self._compile_structure(shape)
        if kind == "list":
            return self._compile_list(shape)
        if kind == "map":
            return self._compile_map(shape)
        if kind == "string":
            enum = list(getattr(shape, "enum", None) or [])
            rule = StringRule.of(
                "",
                min_length=meta.get("min"),
                max_length=meta.get("max"),
                pattern=meta.get("pattern"),
                sensitive=bool(meta.get("sensitive")),
            )

            def check_string(value: Any, path: str, out: list[str]) -> None:
                if not isinstance(value, str):
                    out.append(violation(value, path, "Member must be a string"))
                    return
                if enum and value not in enum:
                    out.append(
                        violation(
                            value,
                            path,
                            "Member must satisfy enum value set: [" + ", ".join(enum) + "]",
                        )
                    )
                    return
                StringRule(
                    path,
                    rule.min_length,
                    rule.max_length,
                    rule.pattern_text,
                    rule.pattern,
                    rule.sensitive,
                ).check(value, out)

            return check_string
        if kind in ("integer", "long", "float", "double"):
            minimum, maximum = meta.get("min"), meta.get("max")
            integral = kind in ("integer", "long")

            def check_number(value: Any, path: str, out: list[str]) -> None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    out.append(violation(value, path, "Member must be a number"))
                    return
                if integral and not float(value).is_integer():
                    out.append(violation(value, path, "Member must be an integer"))
                    return
                IntegerRule(path, minimum, maximum).check(value, out)

            return check_number
        if kind == "boolean":

            def check_boolean(value: Any, path: str, out: list[str]) -> None:
                if not isinstance(value, bool):
                    out.append(violation(value, path, "Member must be a boolean"))

            return check_boolean
        if kind == "timestamp":

            def check_timestamp(value: Any, path: str, out: list[str]) -> None:
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    out.append(violation(value, path, "Member must be a timestamp"))

            return check_timestamp
        return lambda value, path, out: None

    def _compile_structure(self, shape: Any) -> _Check:
        required = list(shape.required_members)
        members = [(name, member_path(name), member) for name, member in shape.members.items()]

        def check_structure(value: Any, path: str, out: list[str]) -> None:
            if not isinstance(value, Mapping):
                out.append(violation(value, path, "Member must be a structure"))
                return
            prefix = f"{path}." if path else ""
            for name in required:
                if value.get(name) is None:
                    out.append(
                        violation(None, prefix + member_path(name), "Member must not be null")
                    )
            for name, lower, member in members:
                item = value.get(name)
                if item is not None:
                    self._check_for(member)(item, prefix + lower, out)

        return check_structure

    def _compile_list(self, shape: Any) -> _Check:
        meta = shape.metadata
        minimum, maximum = meta.get("min"), meta.get("max")

        def check_list(value: Any, path: str, out: list[str]) -> None:
            if not isinstance(value, list):
                out.append(violation(value, path, "Member must be a list"))
                return
            if minimum is not None and len(value) < minimum:
                out.append(
                    violation(
                        value,
                        path,
                        f"Member must have length greater than or equal to {minimum}",
                    )
                )
            if maximum is not None and len(value) > maximum:
                out.append(
                    violation(
                        value, path, f"Member must have length less than or equal to {maximum}"
                    )
                )
            check_item = self._check_for(shape.member)
            for index, item in enumerate(value, start=1):
                check_item(item, f"{path}.{index}.member", out)

        return check_list

    def _compile_map(self, shape: Any) -> _Check:
        meta = shape.metadata
        maximum = meta.get("max")

        def check_map(value: Any, path: str, out: list[str]) -> None:
            if not isinstance(value, Mapping):
                out.append(violation(value, path, "Member must be a map"))
                return
            if maximum is not None and len(value) > maximum:
                out.append(
                    violation(
                        value, path, f"Member must have length less than or equal to {maximum}"
                    )
                )
            check_key = self._check_for(shape.key)
            check_value = self._check_for(shape.value)
            for key, item in value.items():
                check_key(key, f"{path}.key", out)
                if item is not None:
                    check_value(item, f"{path}.value", out)

        return check_map
