"""YAML config files read with a map of key paths to lines, so errors can name file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdeval.errors import UserError

Lines = dict[tuple[str | int, ...], int]


def read_yaml(file: Path, *, missing: str, fix: str) -> tuple[Any, Lines]:
    """The parsed document and its key lines; a missing file or bad YAML is a UserError."""
    if not file.is_file():
        raise UserError(missing, where=str(file), fix=fix)
    text = file.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise UserError(
            f"malformed YAML ({exc.problem})", where=f"{file}:{line}", fix="fix the YAML"
        ) from None
    return data, key_lines(node)


def key_lines(node: Any, prefix: tuple[str | int, ...] = ()) -> Lines:
    """Every key path (('compare', 'models', 'teacher'), ('rules', 0)) -> its 1-based line."""
    lines: Lines = {}
    if isinstance(node, yaml.MappingNode):
        children = [((*prefix, str(k.value)), k, v) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [((*prefix, i), v, v) for i, v in enumerate(node.value)]
    else:
        return lines
    for path, marked, value in children:
        lines[path] = marked.start_mark.line + 1
        lines.update(key_lines(value, path))
    return lines


def line_of(lines: Lines, loc: tuple[str | int, ...]) -> int:
    """The line of the deepest key of `loc` the file has (a missing key points at its parent)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1
