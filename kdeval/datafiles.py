"""Reading data files with errors that name the file and line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdeval.errors import UserError


def _open_check(path: Path) -> None:
    if not path.exists():
        raise UserError("data file not found", where=str(path), fix="check the path given to --data")
    if path.is_dir():
        raise UserError("expected a data file, got a directory", where=str(path), fix="pass the file itself")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a malformed line is a UserError."""
    _open_check(path)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"malformed JSON ({exc.msg} at column {exc.colno})",
                    where=f"{path}:{lineno}",
                    fix="each line must be one JSON object",
                ) from None
            if not isinstance(obj, dict):
                raise UserError(
                    f"expected a JSON object, got {type(obj).__name__}",
                    where=f"{path}:{lineno}",
                    fix="each line must be one JSON object",
                )
            yield lineno, obj


def read_json(path: Path) -> Any:
    """Load a whole JSON document; a syntax error is reported with its line."""
    _open_check(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"malformed JSON ({exc.msg})", where=f"{path}:{exc.lineno}", fix="fix the JSON"
        ) from None


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) for a CSV file with a header line."""
    _open_check(path)
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            yield reader.line_num, row


def require(obj: Mapping[str, Any], fields: Sequence[str], where: str) -> None:
    """Raise a UserError naming the first missing field and where the record is."""
    for name in fields:
        if name not in obj or obj[name] is None:
            raise UserError(
                f"missing field '{name}' (expected fields: {', '.join(fields)})",
                where=where,
                fix="check that the file has the expected format for this task",
            )


def write_atomic(path: Path, text: str) -> None:
    """Write text through a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
