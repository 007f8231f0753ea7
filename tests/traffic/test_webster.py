"""Webster's plan against the textbook two-phase example and its bounds."""

from __future__ import annotations

import math

import pytest

from cityops.traffic.webster import PhaseDemand, webster

# two phases, 600 and 300 veh/h on one lane each, s = 1800: y = 1/3 and 1/6, Y = 0.5;
# yellow 3 + red clearance 1 = 4 s lost per phase, L = 8 s: C0 = (1.5*8 + 5)/0.5 = 34 s
TEXTBOOK = [PhaseDemand(2, 600.0), PhaseDemand(4, 300.0)]


def test_textbook_cycle_and_split() -> None:
    plan = webster(TEXTBOOK, min_cycle_s=30)
    assert plan.critical_flow_ratio == pytest.approx(0.5)
    assert plan.lost_time_s == 8
    assert plan.optimum_cycle_s == pytest.approx(34)
    assert plan.cycle_s == 34
    # effective green 26 s split 2:1 = 17.33 / 8.67, whole seconds by largest remainder
    assert [t.green_s for t in plan.phases] == [17, 9]
    assert [t.flow_ratio for t in plan.phases] == pytest.approx([1 / 3, 1 / 6])


def test_the_cycle_is_raised_to_the_minimum() -> None:
    plan = webster(TEXTBOOK, min_cycle_s=60)
    assert plan.cycle_s == 60
    assert [t.green_s for t in plan.phases] == [35, 17]  # 52 s as 34.67 / 17.33


def test_minimum_greens_are_respected() -> None:
    demands = [PhaseDemand(2, 600.0), PhaseDemand(4, 300.0, min_green_s=10.0)]
    plan = webster(demands, min_cycle_s=30)
    assert [t.green_s for t in plan.phases] == [16, 10]
    assert plan.cycle_s == 34


def test_minimum_greens_that_do_not_fit_lengthen_the_cycle() -> None:
    demands = [PhaseDemand(2, 60.0, min_green_s=30.0), PhaseDemand(4, 30.0, min_green_s=30.0)]
    plan = webster(demands, min_cycle_s=30, max_cycle_s=40)
    assert [t.green_s for t in plan.phases] == [30, 30]
    assert plan.cycle_s == 68


def test_lanes_raise_saturation_flow() -> None:
    plan = webster([PhaseDemand(2, 1200.0, lanes=2), PhaseDemand(4, 300.0)], min_cycle_s=30)
    assert plan.critical_flow_ratio == pytest.approx(0.5)
    assert plan.cycle_s == 34


def test_oversaturation_takes_the_maximum_cycle() -> None:
    plan = webster([PhaseDemand(2, 1200.0), PhaseDemand(4, 900.0)], max_cycle_s=90)
    assert plan.oversaturated and math.isinf(plan.optimum_cycle_s)
    assert plan.cycle_s == 90
    assert sum(t.green_s for t in plan.phases) == 82


def test_no_flow_splits_equally() -> None:
    plan = webster([PhaseDemand(2, 0.0), PhaseDemand(4, 0.0)], min_cycle_s=40)
    assert [t.green_s for t in plan.phases] == [16, 16]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        webster([])
    with pytest.raises(ValueError, match="flow"):
        PhaseDemand(2, -1.0)
