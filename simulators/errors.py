"""Exceptions of the simulators, turned into messages and exit codes by `cli.py` only."""

from __future__ import annotations

__all__ = ["ScenarioError", "SimulatorError"]


class SimulatorError(Exception):
    """Base class of every error the simulators raise on purpose."""


class ScenarioError(SimulatorError):
    """A scenario could not be found, read or validated; the message lists every problem."""
