"""Key policies (sagequeue.domain.policy): IAM's evaluation order and wildcards."""

from __future__ import annotations

import pytest

from sagequeue.domain.errors import AccessDenied
from sagequeue.domain.policy import Decision, PolicyError, parse_policy

USER = "arn:aws:iam::000000000000:user/team-a"
FRAUD = "arn:aws:sagemaker:us-east-1:000000000000:endpoint/fraud-detector"


def policy(*statements: dict) -> object:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)}, USER)


def allow(action: str | list[str], resource: str | list[str]) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def deny(action: str | list[str], resource: str | list[str]) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


def test_an_allow_statement_allows_its_action_on_its_resources() -> None:
    p = policy(allow("sagemaker:InvokeEndpointAsync", "arn:aws:sagemaker:*:*:endpoint/fraud-*"))
    assert p.decide("sagemaker:InvokeEndpointAsync", FRAUD) is Decision.ALLOW


def test_anything_not_allowed_is_denied_by_default() -> None:
    p = policy(allow("sagemaker:InvokeEndpointAsync", "arn:aws:sagemaker:*:*:endpoint/fraud-*"))
    other = FRAUD.replace("fraud-detector", "pricing")
    assert p.decide("sagemaker:InvokeEndpointAsync", other) is Decision.IMPLICIT_DENY
    assert p.decide("sagemaker:CreateModel", FRAUD) is Decision.IMPLICIT_DENY


def test_an_explicit_deny_wins_over_any_allow() -> None:
    p = policy(allow("*", "*"), deny("s3:DeleteObject", "arn:aws:s3:::results/*"))
    assert p.decide("s3:DeleteObject", "arn:aws:s3:::results/a") is Decision.EXPLICIT_DENY
    assert p.decide("s3:PutObject", "arn:aws:s3:::results/a") is Decision.ALLOW


def test_actions_match_case_insensitively_and_resources_case_sensitively() -> None:
    p = policy(allow("s3:get*", "arn:aws:s3:::results/team-a/*"))
    assert p.decide("s3:GetObject", "arn:aws:s3:::results/team-a/x") is Decision.ALLOW
    assert p.decide("s3:GetObject", "arn:aws:s3:::results/TEAM-A/x") is Decision.IMPLICIT_DENY


def test_question_mark_matches_one_character_and_other_characters_are_literal() -> None:
    p = policy(allow("s3:GetObject", "arn:aws:s3:::b/run-?.[ab]"))
    assert p.decide("s3:GetObject", "arn:aws:s3:::b/run-1.[ab]") is Decision.ALLOW
    assert p.decide("s3:GetObject", "arn:aws:s3:::b/run-12.[ab]") is Decision.IMPLICIT_DENY
    assert p.decide("s3:GetObject", "arn:aws:s3:::b/run-1.a") is Decision.IMPLICIT_DENY


def test_a_wildcard_prefix_does_not_match_a_sibling_prefix() -> None:
    p = policy(allow("s3:GetObject", "arn:aws:s3:::results/team-a/*"))
    assert p.decide("s3:GetObject", "arn:aws:s3:::results/team-ab/x") is Decision.IMPLICIT_DENY


def test_refusal_carries_iam_message() -> None:
    p = policy(allow("s3:GetObject", "*"), deny("s3:GetObject", "arn:aws:s3:::secret/*"))
    with pytest.raises(AccessDenied) as caught:
        p.check("sagemaker:CreateModel", "arn:aws:sagemaker:us-east-1:0:model/m")
    assert caught.value.message == (
        f"User: {USER} is not authorized to perform: sagemaker:CreateModel on resource: "
        "arn:aws:sagemaker:us-east-1:0:model/m because no identity-based policy allows the "
        "sagemaker:CreateModel action"
    )
    with pytest.raises(AccessDenied) as caught:
        p.check("s3:GetObject", "arn:aws:s3:::secret/k")
    assert caught.value.message.endswith("with an explicit deny in an identity-based policy")


def test_a_single_statement_and_json_text_are_accepted() -> None:
    text = '{"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}}'
    assert parse_policy(text, USER).decide("s3:PutObject", "arn:aws:s3:::b/k") is Decision.ALLOW


@pytest.mark.parametrize(
    "document",
    [
        {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {}}]},
        {"Statement": [{"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}]},
        {"Statement": [{"Effect": "Maybe", "Action": "s3:*", "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": "s3:*"}]},
        {"Statement": "Allow everything"},
        {"Version": "2012-10-17"},
        "not json",
    ],
)
def test_a_policy_that_cannot_be_evaluated_as_written_is_refused(document: object) -> None:
    with pytest.raises(PolicyError):
        parse_policy(document, USER)
