"""VRPLIB: reading instances (EUC_2D rounding, explicit weights), clear errors for bad
files, and the solution round trip on the hand-written instance in data/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cityops.routing.check import check_plan, plan_cost
from cityops.routing.errors import VrplibError
from cityops.routing.solver import OrToolsEngine
from cityops.routing.vrplib import (
    format_solution,
    read_solution,
    read_vrplib,
    solution_plan,
)

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny.vrp"
CVRPLIB = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "cvrplib"

HEADER = """NAME : {name}
TYPE : CVRP
DIMENSION : {n}
CAPACITY : 10
"""


def write(tmp_path: Path, text: str, name: str = "x.vrp") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_tiny_instance() -> None:
    problem, meta = read_vrplib(TINY)
    assert (meta.name, meta.dimension, meta.capacity, meta.depot_node) == ("tiny-n6-k2", 6, 10, 1)
    assert meta.comment.startswith("Hand-written")
    assert [s.id for s in problem.stops] == ["2", "3", "4", "5", "6"]
    assert [s.demand_l for s in problem.stops] == [4, 5, 4, 5, 2]
    assert meta.customer_number == {"2": 1, "3": 2, "4": 3, "5": 4, "6": 5}
    assert len(problem.vehicles) == 2 + 2  # k from the name plus a margin
    # (0,0)-(3,4) = 5 exactly; (3,4)-(-3,4) = 6; (6,8)-(-6,8) = 12; (-6,8)-(0,-7) = 16.16 → 16
    assert problem.distance_m[0, 1] == 5
    assert problem.distance_m[1, 3] == 6
    assert problem.distance_m[2, 4] == 12
    assert problem.distance_m[4, 5] == 16
    assert (problem.time_s == problem.distance_m).all()
    assert read_vrplib(TINY, vehicles=7)[0].vehicles[-1].id == "truck-7"


def test_euclidean_distances_round_half_up(tmp_path: Path) -> None:
    # (0,0)-(1,1): 1.414 → 1; (0,0)-(2,1): 2.236 → 2; (0,0)-(1,2)... ; (0,0)-(5,5): 7.07 → 7
    coords = "1 0 0\n2 1 1\n3 2 1\n4 5 5\n5 0.5 0\n"
    demands = "1 0\n2 1\n3 1\n4 1\n5 1\n"
    text = (
        HEADER.format(name="r", n=5)
        + "EDGE_WEIGHT_TYPE : EUC_2D\nNODE_COORD_SECTION\n"
        + coords
        + "DEMAND_SECTION\n"
        + demands
        + "DEPOT_SECTION\n1\n-1\nEOF\n"
    )
    problem, _ = read_vrplib(write(tmp_path, text))
    assert problem.distance_m[0].tolist() == [0, 1, 2, 7, 1]  # 0.5 rounds up to 1


@pytest.mark.parametrize(
    ("fmt", "weights"),
    [
        ("FULL_MATRIX", "0 1 2\n1 0 3\n2 3 0"),
        ("LOWER_ROW", "1\n2 3"),
        ("UPPER_ROW", "1 2\n3"),
        ("LOWER_DIAG_ROW", "0\n1 0\n2 3 0"),
        ("UPPER_DIAG_ROW", "0 1 2\n0 3\n0"),
    ],
)
def test_explicit_weights(tmp_path: Path, fmt: str, weights: str) -> None:
    text = (
        HEADER.format(name="e", n=3)
        + f"EDGE_WEIGHT_TYPE : EXPLICIT\nEDGE_WEIGHT_FORMAT : {fmt}\nEDGE_WEIGHT_SECTION\n"
        + weights
        + "\nDEMAND_SECTION\n1 0\n2 3\n3 4\nDEPOT_SECTION\n1\n-1\nEOF\n"
    )
    problem, _ = read_vrplib(write(tmp_path, text))
    assert problem.distance_m.tolist() == [[0, 1, 2], [1, 0, 3], [2, 3, 0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("NAME : x\nTYPE : VRPTW\n", "not supported"),
        ("NAME : x\nTYPE : CVRP\nCAPACITY : 10\n", "DIMENSION missing"),
        ("NAME : x\nDIMENSION : two\nCAPACITY : 10\n", "not an integer"),
        (HEADER.format(name="x", n=2) + "EDGE_WEIGHT_TYPE : EUC_2D\n", "DEMAND_SECTION missing"),
        (HEADER.format(name="x", n=2) + "DEMAND_SECTION\n1 0\n2 x\n", "not a number"),
        (HEADER.format(name="x", n=2) + "DEMAND_SECTION\n1 0\n", "expected 2 rows"),
        (HEADER.format(name="x", n=2) + "DEMAND_SECTION\n1 0\n3 1\n", "node ids"),
        (HEADER.format(name="x", n=2) + "DEMAND_SECTION\n1 0\n2 1\n", "depot"),
        (
            HEADER.format(name="x", n=2) + "DEMAND_SECTION\n1 0\n2 1\nDEPOT_SECTION\n1\n-1\n",
            "EDGE_WEIGHT_TYPE",
        ),
        ("garbage line here\n", "unexpected line"),
    ],
)
def test_malformed_instances(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(VrplibError, match=message):
        read_vrplib(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VrplibError, match="no such file"):
        read_vrplib(tmp_path / "nope.vrp")
    with pytest.raises(VrplibError, match="no such file"):
        read_solution(tmp_path / "nope.sol")


def test_solution_round_trip(tmp_path: Path) -> None:
    problem, meta = read_vrplib(TINY)
    plan = OrToolsEngine(solution_limit=200).solve(problem, time_limit_s=10)
    text = format_solution(plan, meta)
    assert text.splitlines()[-1] == "Cost 54"
    assert all(line.startswith("Route #") for line in text.splitlines()[:-1])
    routes, cost = read_solution(write(tmp_path, text, "tiny.sol"))
    assert cost == 54
    assert sorted(sorted(r) for r in routes) == [[1, 2], [3, 4], [5]]
    back = solution_plan(problem, meta, routes)
    assert check_plan(problem, back) == []
    assert plan_cost(problem, back).total == 54
    assert [r.stop_ids for r in back.routes if r.stop_ids] == [
        r.stop_ids for r in plan.routes if r.stop_ids
    ]


def test_bad_solutions(tmp_path: Path) -> None:
    problem, meta = read_vrplib(TINY)
    with pytest.raises(VrplibError, match="Route"):
        read_solution(write(tmp_path, "Cost 3\n", "a.sol"))
    with pytest.raises(VrplibError, match="bad route"):
        read_solution(write(tmp_path, "Route #1: 1 x\n", "b.sol"))
    with pytest.raises(VrplibError, match="customer 9"):
        solution_plan(problem, meta, [[9]])
    with pytest.raises(VrplibError, match="routes but only"):
        solution_plan(problem, meta, [[1]] * 5)


@pytest.mark.skipif(not CVRPLIB.is_dir(), reason="CVRPLIB benchmark folder not present")
def test_best_known_costs_reproduce() -> None:
    """Our rounding convention gives exactly the best-known costs of real X instances."""
    for name in ("X-n101-k25", "X-n134-k13"):
        routes, cost = read_solution(CVRPLIB / f"{name}.sol")
        problem, meta = read_vrplib(CVRPLIB / f"{name}.vrp", vehicles=len(routes))
        plan = solution_plan(problem, meta, routes)
        assert check_plan(problem, plan) == []
        assert plan_cost(problem, plan).total == cost
        assert isinstance(problem.distance_m, np.ndarray)
