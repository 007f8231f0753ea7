"""Where a value sits in a YAML file, so that a validation error can name its line.

`parse_located` reads a document once into plain data and its node tree; `locate` turns
the path of a validation error (pydantic's `loc`: keys and list indices) into the line
and column of the value, or of the nearest enclosing one when the key is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Located", "YamlError", "locate", "parse_located"]


class YamlError(ValueError):
    """A file that is not YAML at all; `line` and `column` are 1-based."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Located:
    data: Any
    root: yaml.Node | None


def parse_located(text: str) -> Located:
    """The document's data and its node tree (safe YAML only)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise YamlError(f"not valid YAML: {exc.problem or exc}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise YamlError("not valid YAML: nested too deeply") from None
    return Located(data, root)


def locate(root: yaml.Node | None, loc: Sequence[str | int]) -> tuple[int, int]:
    """1-based (line, column) of the value at `loc`, or of its deepest existing parent."""
    if root is None:
        return 1, 1
    node = root
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
    return node.start_mark.line + 1, node.start_mark.column + 1


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return value  # type: ignore[no-any-return]
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        items = node.value
        return items[part] if 0 <= part < len(items) else None
    return None
