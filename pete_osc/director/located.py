"""YAML loading that remembers line numbers, so a bad file is refused with its line.

DIRECTOR.md's schema block and the mapping files are both read through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import PeteError


@dataclass
class Located:
    """A YAML document as plain Python data, plus the line of every mapping key.

    ``lines`` maps a key path such as ``("keys", "energy", "min")`` to its 1-based line
    in the file (``line_offset`` added, for YAML embedded in a larger file).
    """

    data: Any
    path: Path
    lines: dict[tuple, int] = field(default_factory=dict)
    first_line: int = 1

    def line(self, *key_path) -> int:
        """The line of ``key_path``, or of its nearest parent that has one."""
        key_path = tuple(key_path)
        while key_path:
            if key_path in self.lines:
                return self.lines[key_path]
            key_path = key_path[:-1]
        return self.first_line

    def error(self, key_path: tuple, message: str) -> PeteError:
        """A PeteError naming the file and the line of ``key_path``."""
        return PeteError(f"{self.path}:{self.line(*key_path)}: {message}")


def load_located(text: str, path: Path, line_offset: int = 0) -> Located:
    """Parse ``text`` as YAML; syntax errors become a PeteError with file and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        # An unclosed bracket or quote is noticed lines later; the context mark is where
        # the construct began, which is where the mistake usually is.
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        line = (mark.line + 1 + line_offset) if mark else line_offset + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise PeteError(f"{path}:{line}: YAML syntax error: {detail}") from None
    located = Located(data=None, path=path, first_line=line_offset + 1)
    if node is not None:
        located.data = _to_python(node, (), located.lines, line_offset)
    return located


def _to_python(node: yaml.Node, key_path: tuple, lines: dict, offset: int) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            lines[key_path + (key,)] = key_node.start_mark.line + 1 + offset
            out[key] = _to_python(value_node, key_path + (key,), lines, offset)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[key_path + (i,)] = item.start_mark.line + 1 + offset
            items.append(_to_python(item, key_path + (i,), lines, offset))
        return items
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        # A mapping used as a key, say: keep it hashable and visible in the message.
        return str(node.value)
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
