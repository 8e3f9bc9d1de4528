"""CloudWatch metric alarms: how an alarm's state follows from its datapoints. Pure.

An alarm looks at the last ``EvaluationPeriods`` complete periods of its metric. It goes
to ALARM when at least ``DatapointsToAlarm`` of them breach the threshold, to OK when
fewer do, and treats missing datapoints as its ``TreatMissingData`` says (CloudWatch's
"Configuring how CloudWatch alarms treat missing data"). With missing data treated as
missing, ALARM always needs ``DatapointsToAlarm`` breaching datapoints: while fewer are
known and some breach, the state is kept.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class AlarmState(enum.StrEnum):
    OK = "OK"
    ALARM = "ALARM"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


COMPARISONS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "GreaterThanOrEqualToThreshold": (">=", lambda v, t: v >= t),
    "GreaterThanThreshold": (">", lambda v, t: v > t),
    "LessThanThreshold": ("<", lambda v, t: v < t),
    "LessThanOrEqualToThreshold": ("<=", lambda v, t: v <= t),
}
TREAT_MISSING = ("breaching", "notBreaching", "ignore", "missing")


@dataclass(frozen=True, slots=True)
class Evaluation:
    state: AlarmState | None  # None: keep the current state ("ignore")
    reason: str


def evaluate(
    datapoints: Sequence[float | None],
    *,
    threshold: float,
    comparison: str,
    datapoints_to_alarm: int,
    treat_missing: str,
    period: int,
) -> Evaluation:
    """The state for ``datapoints`` (oldest first, one per evaluation period, None where
    the period has no data)."""
    symbol, breaches = COMPARISONS[comparison]
    present = [value for value in datapoints if value is not None]
    missing = len(datapoints) - len(present)
    if treat_missing == "breaching":
        breaching = sum(1 for v in present if breaches(v, threshold)) + missing
        considered = len(datapoints)
    elif treat_missing == "notBreaching":
        breaching = sum(1 for v in present if breaches(v, threshold))
        considered = len(datapoints)
    else:
        breaching = sum(1 for v in present if breaches(v, threshold))
        considered = len(present)
        if not present:
            if treat_missing == "ignore":
                return Evaluation(None, "no datapoints: state kept (TreatMissingData ignore)")
            return Evaluation(
                AlarmState.INSUFFICIENT_DATA,
                f"Insufficient Data: {len(datapoints)} datapoints were unknown.",
            )
    shown = ", ".join(_number(v) for v in present[-5:]) or "none"
    if breaching < datapoints_to_alarm and breaching > 0 and considered < datapoints_to_alarm:
        # Too few datapoints yet to tell (a new metric, or a new alarm on a young one):
        # ALARM needs DatapointsToAlarm of them.
        return Evaluation(
            None,
            f"{considered} of {len(datapoints)} datapoints known, {breaching} breaching: "
            "state kept until DatapointsToAlarm datapoints are known.",
        )
    if breaching >= datapoints_to_alarm:
        return Evaluation(
            AlarmState.ALARM,
            f"Threshold Crossed: {breaching} out of the last {len(datapoints)} datapoints "
            f"[{shown}] were {_word(symbol)} the threshold ({_number(threshold)}) "
            f"(minimum {datapoints_to_alarm} datapoints for OK -> ALARM transition).",
        )
    return Evaluation(
        AlarmState.OK,
        f"Threshold Crossed: {considered - breaching} out of the last {len(datapoints)} "
        f"datapoints [{shown}] were not {_word(symbol)} the threshold ({_number(threshold)}) "
        f"(minimum 1 datapoint for ALARM -> OK transition).",
    )


def _word(symbol: str) -> str:
    return {
        ">=": "greater than or equal to",
        ">": "greater than",
        "<": "less than",
        "<=": "less than or equal to",
    }[symbol]


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e15 else repr(value)
