# The class names follow the project's error naming (see roadworks/errors.py).
# ruff: noqa: N818
"""The errors of the traffic package, for the CLI and the API to map in one place."""

from __future__ import annotations

__all__ = ["TrafficError", "UnknownController"]


class TrafficError(Exception):
    """Base of the traffic package's errors."""


class UnknownController(TrafficError):
    """No signal controller with that id in the registry (HTTP 404)."""

    def __init__(self, controller_id: str) -> None:
        super().__init__(f"no signal controller {controller_id!r} in the registry")
        self.controller_id = controller_id
