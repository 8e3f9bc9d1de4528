"""Alarm states from datapoints and the capacity scaling policies ask for (pure)."""

from __future__ import annotations

import pytest

from sagequeue.domain.alarms import AlarmState, evaluate
from sagequeue.domain.scaling import (
    adjusted_capacity,
    check_step_adjustments,
    decide,
    parse_resource_id,
    step_adjustment,
    tracking_capacity,
)


def state(datapoints, *, to_alarm=2, missing="missing", threshold=1.0):
    return evaluate(
        datapoints,
        threshold=threshold,
        comparison="GreaterThanOrEqualToThreshold",
        datapoints_to_alarm=to_alarm,
        treat_missing=missing,
        period=60,
    ).state


def test_alarm_needs_datapoints_to_alarm_breaching_datapoints() -> None:
    assert state([1.0, 1.0]) is AlarmState.ALARM
    assert state([0.5, 1.0]) is AlarmState.OK
    assert state([1.0, 1.0, 0.0], to_alarm=2) is AlarmState.ALARM


def test_alarm_without_any_datapoint_has_insufficient_data() -> None:
    assert state([None, None]) is AlarmState.INSUFFICIENT_DATA


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ("breaching", AlarmState.ALARM),
        ("notBreaching", AlarmState.OK),
        ("ignore", None),
        ("missing", AlarmState.INSUFFICIENT_DATA),
    ],
)
def test_missing_data_is_treated_as_the_alarm_says(missing, expected) -> None:
    assert state([None, None], missing=missing) is expected


def test_too_few_datapoints_with_some_breaching_keep_the_state() -> None:
    assert state([None, 1.0], to_alarm=2) is None
    assert state([None, 0.0], to_alarm=2) is AlarmState.OK


def test_resource_ids_name_an_endpoint_variant() -> None:
    assert parse_resource_id("endpoint/ep/variant/AllTraffic") == ("ep", "AllTraffic")
    assert parse_resource_id("endpoint/ep/variant/a/b") is None
    assert parse_resource_id("table/x") is None


STEPS = [
    {"MetricIntervalUpperBound": 0, "ScalingAdjustment": -1},
    {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 1},
    {"MetricIntervalLowerBound": 10, "ScalingAdjustment": 3},
]


def test_step_adjustment_is_the_one_whose_interval_holds_the_breach() -> None:
    assert step_adjustment(STEPS, 0) == 1  # lower bound inclusive above the threshold
    assert step_adjustment(STEPS, 9.9) == 1
    assert step_adjustment(STEPS, 10) == 3
    assert step_adjustment(STEPS, -0.5) == -1


def test_overlapping_or_gapped_steps_are_refused() -> None:
    assert check_step_adjustments(STEPS) is None
    assert "overlap" in check_step_adjustments(
        [
            {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1},
            {"MetricIntervalLowerBound": 5, "ScalingAdjustment": 2},
        ]
    )
    assert "gaps" in check_step_adjustments(
        [
            {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 5, "ScalingAdjustment": 1},
            {"MetricIntervalLowerBound": 6, "ScalingAdjustment": 2},
        ]
    )


def test_adjustment_types() -> None:
    assert adjusted_capacity("ChangeInCapacity", 1, 0) == 1
    assert adjusted_capacity("ExactCapacity", 4, 1) == 4
    assert adjusted_capacity("PercentChangeInCapacity", 50, 4) == 6
    assert adjusted_capacity("PercentChangeInCapacity", 10, 4) == 5  # 0.4 rounds to 1
    assert adjusted_capacity("PercentChangeInCapacity", 10, 10, 3) == 13


def test_target_tracking_is_proportional_and_counts_zero_as_one() -> None:
    assert tracking_capacity(2, 10.0, 5.0) == 4
    assert tracking_capacity(0, 12.0, 5.0) == 3
    assert tracking_capacity(3, 0.0, 5.0) == 0


def decision(**fields):
    base = dict(
        desired=3,
        current=1,
        minimum=0,
        maximum=5,
        now=100.0,
        scale_out_until=0.0,
        capacity_before_scale_out=None,
        scale_in_until=0.0,
        suspended={},
    )
    return decide(**{**base, **fields}).capacity


def test_capacity_stays_within_the_target_bounds() -> None:
    assert decision(desired=9) == 5
    assert decision(desired=-3, current=2) == 0


def test_scale_out_during_its_cooldown_counts_from_before_it() -> None:
    # +1 from 0 happened (cooldown running): another +1 asked from 1 changes nothing.
    assert decision(desired=2, current=1, scale_out_until=200, capacity_before_scale_out=0) is None
    # A bigger ask still scales out, counted from the capacity before the cooldown.
    assert decision(desired=4, current=1, scale_out_until=200, capacity_before_scale_out=0) == 3


def test_scale_in_waits_for_the_cooldowns() -> None:
    assert decision(desired=0, current=2, scale_in_until=200) is None
    assert decision(desired=0, current=2, scale_out_until=200) is None
    assert decision(desired=0, current=2) == 0


def test_suspended_scaling_does_nothing() -> None:
    assert decision(suspended={"DynamicScalingOutSuspended": True}) is None
    assert decision(desired=0, current=2, suspended={"DynamicScalingInSuspended": True}) is None
