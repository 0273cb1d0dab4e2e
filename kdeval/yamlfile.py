"""YAML config files read with a map of key paths to lines, so errors can name file:line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kdeval.errors import UserError

if TYPE_CHECKING:
    from pydantic import ValidationError

Lines = dict[tuple[str | int, ...], int]


#: The most nodes a file may expand to through its aliases: a hand-written config has hundreds;
#: a "billion laughs" file (aliases of aliases) expands a few hundred bytes to billions.
MAX_NODES = 100_000


def read_yaml(file: Path, *, missing: str, fix: str) -> tuple[Any, Lines]:
    """The parsed document and its key lines; a missing file or bad YAML is a UserError at file:line.

    A real YAML parser (PyYAML's safe loader), composed once: the node graph is measured before
    anything is built from it, so aliases that would expand past MAX_NODES are refused in
    milliseconds instead of filling memory.
    """
    if not file.is_file():
        raise UserError(missing, where=str(file), fix=fix)
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError("not UTF-8 text", where=f"{file}:{line}", fix="save the file as UTF-8") from None
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        check_expansion(node, file)
        check_duplicate_keys(node, file)
        lines = key_lines(node)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or exc.context or "syntax error"
        if exc.context and exc.context_mark and exc.context.endswith("first occurrence"):
            what = f"{exc.context.partition(';')[0]}, first at line {exc.context_mark.line + 1}"
        raise UserError(f"malformed YAML ({what})", where=f"{file}:{line}", fix="fix the YAML") from None
    except yaml.reader.ReaderError as exc:  # a NUL byte, a control character: no mark, a position
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else 0
        raise UserError(
            f"malformed YAML (character #x{char:04x} is not allowed in YAML)",
            where=f"{file}:{line}",
            fix="remove it (is this a binary file?)",
        ) from None
    except RecursionError:
        raise UserError(
            "malformed YAML (nested too deeply)", where=f"{file}:1", fix="flatten the file"
        ) from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # e.g. an integer of 5,000 digits
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"malformed YAML ({first})", where=f"{file}:1", fix="fix the YAML") from None
    finally:
        if loader is not None:
            loader.dispose()


def check_duplicate_keys(root: yaml.Node, file: Path) -> None:
    """A key written twice in one mapping is refused at its second line (PyYAML would silently
    keep the last one, so a run file could say two things and mean one)."""
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in first:
                        raise UserError(
                            f"key '{key.value}' is given twice (first at line {first[key.value]})",
                            where=f"{file}:{line}",
                            fix="keep one of them",
                        )
                    first[key.value] = line
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def check_expansion(root: yaml.Node, file: Path, limit: int = MAX_NODES) -> None:
    """Refuse a node graph whose aliases expand it past `limit` nodes, or that contains itself.

    Aliases make the composed graph a DAG that shares nodes; what a reader of the data walks is
    its expansion. Each distinct node's expanded size is counted once (memoized, iteratively),
    so the check is linear in the file however large the expansion.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if key in size:
            continue
        if key in on_path:
            raise UserError(
                "recursive alias (a node that contains itself)",
                where=f"{file}:{node.start_mark.line + 1}",
                fix="remove the alias to its own anchor",
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    total = size[id(root)]
    if total <= limit or total <= len(size):
        return  # within the bound, or big without aliases (a data file, not an expansion)
    # point at the first node (in the file) that alone expands past the bound, no child of which does
    worst = min(
        (n for n in _walk(root) if size[id(n)] > limit and all(size[id(c)] <= limit for c in _children(n))),
        key=lambda n: (n.start_mark.line, n.start_mark.column),
    )
    raise UserError(
        f"too many alias expansions (this node expands to {size[id(worst)]:,} nodes, at most {limit:,})",
        where=f"{file}:{worst.start_mark.line + 1}",
        fix="write the values out, or use fewer aliases of aliases",
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _walk(root: yaml.Node) -> list[yaml.Node]:
    """Every distinct node of the graph once."""
    seen: dict[int, yaml.Node] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            stack.extend(_children(node))
    return list(seen.values())


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
        what = f"{key}: {msg}" if key else msg
    return UserError(what, where=f"{file}:{line_of(lines, loc)}", fix=fix)
