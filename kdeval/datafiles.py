"""Reading data files with errors that name the file and line.

Every reader of a user's data file goes through here, so each format (JSON, JSONL, CSV, plain
text) gets the same guarantees:

- a UTF-8 byte order mark at the start and CRLF line endings are accepted;
- bytes that are not UTF-8 are a one-line error naming the file, line and byte offset;
- a file over ``KDEVAL_MAX_FILE_MB`` megabytes (default 2048) is refused before it is read, and a
  line over ``KDEVAL_MAX_LINE_MB`` megabytes (default 64) in a line-based file (JSONL, CSV, text) is
  refused before it is held in memory; set the variable to raise the limit;
- CSV fields may be as long as a line may be, and a row with fewer (or more) fields than the header,
  such as a truncated last row, is refused.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from itertools import count
from pathlib import Path
from typing import Any

from kdeval.errors import UserError

#: Environment variables holding the size limits, in megabytes, and their defaults.
MAX_FILE_ENV, DEFAULT_MAX_FILE_MB = "KDEVAL_MAX_FILE_MB", 2048.0
MAX_LINE_ENV, DEFAULT_MAX_LINE_MB = "KDEVAL_MAX_LINE_MB", 64.0
_MB = 1 << 20
#: csv.field_size_limit takes a C long, which is 32 bits on some platforms.
_CSV_FIELD_CAP = (1 << 31) - 1


def _limit_mb(env: str, default: float) -> float:
    """A size limit in megabytes from the environment; a value that is not a positive number is refused."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise UserError(
            f"{env}={raw!r} is not a positive number of megabytes", fix=f"set {env}=N or unset it"
        )
    return value


def max_file_bytes() -> int:
    """The largest data file read, in bytes (``KDEVAL_MAX_FILE_MB``, default 2048 MB)."""
    return int(_limit_mb(MAX_FILE_ENV, DEFAULT_MAX_FILE_MB) * _MB)


def max_line_bytes() -> int:
    """The longest line read from a line-based file, in bytes (``KDEVAL_MAX_LINE_MB``, default 64 MB)."""
    return int(_limit_mb(MAX_LINE_ENV, DEFAULT_MAX_LINE_MB) * _MB)


def _too_big(what: str, where: str, env: str, default: float) -> UserError:
    limit = _limit_mb(env, default)
    return UserError(
        f"{what} is over the {limit:g} MB limit",
        where=where,
        fix=f"set {env} to a larger number of MB to raise it",
    )


def _open_check(path: Path) -> None:
    if not path.exists():
        raise UserError("data file not found", where=str(path), fix="check the path given to --data")
    if path.is_dir():
        raise UserError("expected a data file, got a directory", where=str(path), fix="pass the file itself")
    if not path.is_file():  # a FIFO, socket or device would block or never end
        raise UserError("not a regular file", where=str(path), fix="pass a data file saved on disk")
    if path.stat().st_size > max_file_bytes():
        raise _too_big("the file", str(path), MAX_FILE_ENV, DEFAULT_MAX_FILE_MB)


def _decode(raw: bytes, path: Path, lineno: int, offset: int) -> str:
    """raw (which starts at byte `offset` of the file, on line `lineno`) as text; not UTF-8 is a UserError."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lineno + raw.count(b"\n", 0, exc.start)
        raise UserError(
            f"byte {offset + exc.start} is not UTF-8 (0x{raw[exc.start]:02x})",
            where=f"{path}:{line}",
            fix="save the file as UTF-8",
        ) from None


def _bom_length(raw: bytes, offset: int) -> int:
    """Length of a byte order mark at the very start of the file (0 elsewhere or without one)."""
    return len(codecs.BOM_UTF8) if offset == 0 and raw.startswith(codecs.BOM_UTF8) else 0


def read_text(path: Path) -> str:
    """A whole file as text: checked for size and UTF-8, without its byte order mark."""
    _open_check(path)
    raw = path.read_bytes()
    skip = _bom_length(raw, 0)
    return _decode(raw[skip:], path, 1, skip)


def _raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text with its line ending) for every line; a line over the limit is a UserError."""
    _open_check(path)
    limit = max_line_bytes()
    offset = 0
    with path.open("rb") as fh:
        for lineno in count(1):
            raw = fh.readline(limit + 2)  # room for "\r\n" after a line of exactly `limit` bytes
            if not raw:
                return
            if len(raw.rstrip(b"\r\n")) > limit:
                raise _too_big("the line", f"{path}:{lineno}", MAX_LINE_ENV, DEFAULT_MAX_LINE_MB)
            skip = _bom_length(raw, offset)
            yield lineno, _decode(raw[skip:], path, lineno, offset + skip)
            offset += len(raw)


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text without its line ending) for each non-blank line of a text file."""
    for lineno, line in _raw_lines(path):
        if line.strip():
            yield lineno, line.rstrip("\r\n")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a malformed line is a UserError."""
    for lineno, line in read_lines(path):
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
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"malformed JSON ({exc.msg})", where=f"{path}:{exc.lineno}", fix="fix the JSON"
        ) from None


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) for a CSV file with a header line; blank lines are skipped.

    The line number is the row's first line (a quoted field may span several; its line breaks read
    as LF whatever the file uses). A field may be as long as a line may be; a row whose field count
    differs from the header's is a UserError.
    """
    old_limit = csv.field_size_limit(min(max_line_bytes(), _CSV_FIELD_CAP))
    try:
        reader = csv.reader(_lf(line) for _, line in _raw_lines(path))
        header: list[str] | None = None
        while True:
            lineno = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _csv_error(str(exc), f"{path}:{lineno}") from None
            if not row:
                continue
            if header is None:
                header = row
                twice = sorted({h for h in row if row.count(h) > 1})
                if twice:
                    raise UserError(
                        f"the header names column(s) {', '.join(map(repr, twice))} twice",
                        where=f"{path}:{lineno}",
                        fix="give every column its own name",
                    )
                continue
            if len(row) != len(header):
                raise UserError(
                    f"row has {len(row)} fields, the header has {len(header)}",
                    where=f"{path}:{lineno}",
                    fix="check the quoting, or whether the file was cut short",
                )
            yield lineno, dict(zip(header, row, strict=True))
    finally:
        csv.field_size_limit(old_limit)


def _lf(line: str) -> str:
    """A line ending in LF: a field spanning lines reads the same from a CRLF file as from an LF one."""
    return line[:-2] + "\n" if line.endswith("\r\n") else line


def _csv_error(message: str, where: str) -> UserError:
    if "field limit" in message:
        return _too_big("a field", where, MAX_LINE_ENV, DEFAULT_MAX_LINE_MB)
    return UserError(f"malformed CSV ({message})", where=where, fix="fix the CSV")


def require(obj: Mapping[str, Any], fields: Sequence[str], where: str) -> None:
    """Raise a UserError naming the first missing field and where the record is."""
    for name in fields:
        if name not in obj or obj[name] is None:
            raise UserError(
                f"missing field '{name}' (expected fields: {', '.join(fields)})",
                where=where,
                fix="check that the file has the expected format for this task",
            )


def id_of(value: Any, where: str, field: str = "id") -> str:
    """An example id as text: a string or an integer; anything else (null, an object, a list,
    true) is a UserError rather than an id made of its printed form."""
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise UserError(
            f"field '{field}' must be a non-empty string or an integer, got {json.dumps(value)[:60]}",
            where=where,
            fix="give every record its own id",
        )
    return str(value)


def unique_ids(located: Sequence[tuple[str, str]]) -> None:
    """Check (id, where) pairs: an id seen twice is a UserError naming both places.

    Per-sample rows are keyed by example id, so a repeated id would silently score one record
    with another's output.
    """
    seen: dict[str, str] = {}
    for ex_id, where in located:
        if ex_id in seen:
            raise UserError(
                f"duplicate id '{ex_id}' (first at {seen[ex_id]})", where=where, fix="ids must be unique"
            )
        seen[ex_id] = where


def write_atomic(path: Path, text: str) -> None:
    """Write text through a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
