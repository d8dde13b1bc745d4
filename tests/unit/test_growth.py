"""The growth curves' shapes: compounding, linear, flat, shrinking, saturated, and too little to say."""

from __future__ import annotations

import pytest

from flywheel.report.growth import Growth, diagnosis, growth


@pytest.mark.parametrize(
    "values, shape",
    [
        ([100, 150, 225, 338, 506], "compounding"),  # +50 % every period
        ([100, 200, 300, 400, 500, 600], "linear"),  # the same step each period: relative growth falls
        ([1000, 1010, 990, 1005, 1000], "flat"),
        ([1000, 900, 800, 700], "shrinking"),
        ([0.3, 0.6, 0.95, 0.96], "saturated"),
        ([100, 200], "too_short"),
        ([0, 10, 20], "too_short"),  # no rate from nothing
        ([None, 100, None, 150, 225], "compounding"),  # missing points are skipped
    ],
)
def test_shapes(values, shape):
    assert growth("requests", values, ceiling=0.9 if shape == "saturated" else None).shape == shape


def test_rate_is_the_geometric_mean_per_period():
    g = growth("users", [100, 121, 146.41])
    assert g.rate == pytest.approx(0.21) and (g.first, g.last, g.points) == (100, 146.41, 3)
    assert growth("users", [1000, 500, 250]).rate == pytest.approx(-0.5)


def test_a_low_quality_curve_that_stops_rising_is_not_saturated():
    assert growth("quality", [0.3, 0.5, 0.5, 0.5], ceiling=0.9).shape == "linear"


def test_diagnosis_names_the_curves_that_need_a_look():
    curves = [
        growth("quality", [0.3, 0.6, 0.95, 0.95], ceiling=0.9),
        growth("requests", [100, 150, 225, 338]),
        growth("users", [100, 200, 300, 400, 500, 600]),
        Growth("users", 1, 5, 5, None, "too_short"),
    ]
    assert diagnosis(curves) == [
        "quality saturated at 95 %: expand into adjacent tasks or domains",
        "users growth linear: +43.1 % a window over 6 windows",
    ]
    assert diagnosis([growth("quality", [0.5, 0.5, 0.5])]) == []  # a flat quality curve: the delta check's job
    assert diagnosis([growth("quality", [0.5, 0.4, 0.3])]) == [
        "quality growth shrinking: -22.5 % a cycle over 3 cycles"
    ]
