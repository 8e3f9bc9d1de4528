"""IAM-style policies for access keys (scoped keys). Pure: no I/O.

A key's policy is a list of statements, each with an ``Effect`` (Allow or Deny), the
``Action``s it covers (``sagemaker:InvokeEndpointAsync``, ``s3:GetObject``...) and the
``Resource`` ARNs it covers; ``*`` and ``?`` are wildcards in both. Evaluation follows
IAM's order: an explicit Deny wins, else an Allow allows, else the request is denied.
Actions match case-insensitively, resources case-sensitively, as in IAM.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from sagequeue.domain.errors import AccessDenied

_STATEMENT_KEYS = {"Sid", "Effect", "Action", "Resource"}


class Decision(enum.Enum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit_deny"
    IMPLICIT_DENY = "implicit_deny"


class PolicyError(ValueError):
    """A policy document that cannot be used; the message says why."""


def wildcard(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters (``/`` and ``:`` too), ``?`` one
    character; everything else literal."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@dataclass(frozen=True, slots=True)
class Statement:
    allow: bool
    actions: tuple[re.Pattern[str], ...]
    resources: tuple[re.Pattern[str], ...]

    def covers(self, action: str, resource: str) -> bool:
        return any(a.fullmatch(action) for a in self.actions) and any(
            r.fullmatch(resource) for r in self.resources
        )


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """The policy of one access key, and the principal it names in refusals."""

    principal_arn: str
    statements: tuple[Statement, ...]

    def decide(self, action: str, resource: str) -> Decision:
        allowed = False
        for statement in self.statements:
            if statement.covers(action, resource):
                if not statement.allow:
                    return Decision.EXPLICIT_DENY
                allowed = True
        return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY

    def check(self, action: str, resource: str) -> None:
        """Raise AccessDenied (with IAM's message) unless the action is allowed."""
        decision = self.decide(action, resource)
        if decision is Decision.ALLOW:
            return
        reason = (
            "with an explicit deny in an identity-based policy"
            if decision is Decision.EXPLICIT_DENY
            else f"because no identity-based policy allows the {action} action"
        )
        raise AccessDenied(
            f"User: {self.principal_arn} is not authorized to perform: {action} "
            f"on resource: {resource} {reason}",
            action=action,
            resource=resource,
        )


def _strings(statement: dict[str, Any], key: str, index: int) -> list[str]:
    value = statement.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"Statement {index}: {key} must be a string or a list of strings")
    return value


def parse_policy(document: Any, principal_arn: str) -> KeyPolicy:
    """A policy from its document (a mapping, or the same as JSON text): ``Statement``
    holds one statement or a list. Keys IAM has but this does not evaluate
    (``Condition``, ``NotAction``, ``NotResource``, ``Principal``) are refused rather
    than ignored, so that no policy allows more than it reads. Raises PolicyError."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise PolicyError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "Statement" not in document:
        raise PolicyError("a policy is a mapping with a Statement list")
    unknown = set(document) - {"Version", "Id", "Statement"}
    if unknown:
        raise PolicyError(f"unsupported policy keys: {', '.join(sorted(unknown))}")
    raw_statements = document["Statement"]
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list):
        raise PolicyError("Statement must be a statement or a list of statements")
    statements = []
    for index, raw in enumerate(raw_statements, start=1):
        if not isinstance(raw, dict):
            raise PolicyError(f"Statement {index} must be a mapping")
        unknown = set(raw) - _STATEMENT_KEYS
        if unknown:
            raise PolicyError(
                f"Statement {index}: unsupported keys {', '.join(sorted(unknown))} "
                "(supported: Sid, Effect, Action, Resource)"
            )
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"Statement {index}: Effect must be Allow or Deny")
        statements.append(
            Statement(
                allow=effect == "Allow",
                actions=tuple(
                    wildcard(a, ignore_case=True) for a in _strings(raw, "Action", index)
                ),
                resources=tuple(wildcard(r) for r in _strings(raw, "Resource", index)),
            )
        )
    return KeyPolicy(principal_arn=principal_arn, statements=tuple(statements))


def user_arn(account_id: str, user_name: str) -> str:
    return f"arn:aws:iam::{account_id}:user/{user_name}"
