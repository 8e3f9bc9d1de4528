"""Row mappers shared by the stores: one place that says how a domain record becomes a
table row and back, so SQLite and PostgreSQL cannot drift (the memory store keys its
instance claims the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from sagequeue.ports import (
    InstanceClaim,
    InstanceState,
    Invocation,
    InvocationStatus,
    NotificationState,
    OutboxMessage,
    Resource,
    ResourceKind,
)

InstanceKey = tuple[str, str, int, int]


def to_invocation(row: Sequence[Any]) -> Invocation:
    invocation = Invocation(*row)
    invocation.status = InvocationStatus(invocation.status)
    return invocation


def to_resource(row: Sequence[Any]) -> Resource:
    kind, name, doc, version, created_at = row
    return Resource(ResourceKind(kind), name, msgspec.json.decode(doc), version, created_at)


def instance_key(claim: InstanceClaim) -> InstanceKey:
    # Endpoint names are case-insensitive in SageMaker; the key is not.
    return (claim.endpoint_name.lower(), claim.variant_name, claim.generation, claim.slot)


def instance_row(claim: InstanceClaim) -> tuple[Any, ...]:
    return (
        *instance_key(claim),
        claim.worker_id,
        str(claim.state),
        claim.claimed_at,
        claim.updated_at,
        claim.detail,
    )


def to_instance(row: Sequence[Any]) -> InstanceClaim:
    claim = InstanceClaim(*row)
    claim.state = InstanceState(claim.state)
    return claim


def outbox_row(message: OutboxMessage) -> tuple[Any, ...]:
    return (
        message.message_id,
        message.endpoint_name,
        message.inference_id,
        message.topic,
        message.body,
        message.created_at,
        str(message.state),
        message.next_attempt_at or message.created_at,
        message.attempts,
        message.lease_owner,
        message.finished_at,
        message.last_error,
    )


def to_outbox_message(row: Sequence[Any]) -> OutboxMessage:
    message = OutboxMessage(*row)
    message.state = NotificationState(message.state)
    message.body = bytes(message.body)
    return message
