"""``cityops routing solve`` on the hand-written instance, and its error handling."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cityops.api.cli import build_parser, main
from cityops.routing import cli as routing_cli
from cityops.routing.engines import ENGINES, make_engine

TINY = Path(__file__).parent / "data" / "tiny.vrp"


@pytest.mark.parametrize("engine", ENGINES)
def test_solve_prints_the_solution(engine: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["--log-level", "WARNING", "routing", "solve", str(TINY), "--time-limit", "0.5",
         "--engine", engine, "--seed", "1"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == "Cost 54"
    routes = sorted(sorted(int(x) for x in line.split(":")[1].split()) for line in lines[:-1])
    assert routes == [[1, 2], [3, 4], [5]]
    assert "tiny-n6-k2: 5 customers" in err
    assert "cost 54, 3 routes, 0 unserved, 0 violations" in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["routing", "solve", str(tmp_path / "nope.vrp"), "--time-limit", "1"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "no such file" in err


def test_malformed_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.vrp"
    bad.write_text("NAME : bad\nTYPE : CVRP\nDIMENSION : 3\nCAPACITY : x\n")
    assert main(["routing", "solve", str(bad)]) == 2
    assert "CAPACITY is not an integer" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--time-limit", "0"], ["--engine", "gurobi"]):
        with pytest.raises(SystemExit) as exc:
            main(["routing", "solve", str(TINY), *args])
        assert exc.value.code == 2
    capsys.readouterr()


def test_too_small_a_fleet_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["routing", "solve", str(TINY), "--time-limit", "0.5", "--vehicles", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "unserved" in err
    assert out.startswith("Route #1:")


def test_routing_command_is_extensible() -> None:
    """Another module can add a subcommand to ``cityops routing`` with one function."""

    def add_hello(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        sub.add_parser("hello").set_defaults(func=lambda args: 0)

    original = routing_cli._SUBCOMMANDS
    routing_cli._SUBCOMMANDS = (*original, add_hello)
    try:
        args = build_parser().parse_args(["routing", "hello"])
    finally:
        routing_cli._SUBCOMMANDS = original
    assert args.routing_command == "hello"
    assert build_parser().parse_args(["routing", "solve", "x.vrp"]).time_limit == 10.0


def test_make_engine() -> None:
    assert [make_engine(name).name for name in ENGINES] == list(ENGINES)
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("cplex")
