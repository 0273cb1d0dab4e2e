"""YAML config files read with a map of key paths to lines, so errors can name file:line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kdeval.errors import UserError

if TYPE_CHECKING:
    from pydantic import ValidationError

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


def validation_error(
    exc: ValidationError, file: Path, lines: Lines, prefix: tuple[str | int, ...] = (), *, fix: str
) -> UserError:
    """A schema's first validation error as one line at the offending key's line."""
    err = exc.errors()[0]
    loc = (*prefix, *(x for x in err["loc"] if x != "[key]"))  # a bad mapping key: point at the key
    key = ".".join(str(x) for x in loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        what = f"unknown key '{key}'"
    elif err["type"] == "missing":
        what = f"missing key '{key}'"
    else:
        what = f"{key}: {msg}"
    return UserError(what, where=f"{file}:{line_of(lines, loc)}", fix=fix)
