"""Helpers shared by the built-in suites: shipped data, public-file tasks, split keys, output text.

Nothing here knows about one family; each suite's `tasks.py` keeps its own prompt and scoring.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdeval.datafiles import id_of, read_jsonl, require, unique_ids, write_atomic
from kdeval.errors import UserError
from kdeval.tasks import Example, Output

#: One in TEST_BUCKETS split keys belongs to the test split (see `is_test_key`).
TEST_BUCKETS = 5


def data_dir(package_file: str) -> Path:
    """The `data/` folder next to a suite package's `__init__.py` (or any module in it)."""
    return Path(package_file).resolve().parent / "data"


# --- loading -------------------------------------------------------------------------------------


def load_records(
    path: Path, fields: Sequence[str], parse: Callable[[dict[str, Any], str], dict[str, Any]]
) -> list[Example]:
    """Examples from a JSONL file whose records carry an `id` plus `fields`.

    `parse(record, where)` turns a checked record into the example's data; ids must be unique
    because the store keys per-sample rows by them.
    """
    located = []
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        require(obj, ["id", *fields], where)
        located.append((Example(id_of(obj["id"], where), parse(obj, where)), where))
    return unique_examples(located)


def unique_examples(located: Sequence[tuple[Example, str]]) -> list[Example]:
    """The examples of (example, where) pairs; an id seen twice is a UserError naming both places.

    Every loader ends here: the store keys per-sample rows by example id, so a repeated id would
    silently score the later record with the earlier one's output.
    """
    unique_ids([(ex.id, where) for ex, where in located])
    return [ex for ex, _ in located]


def need_file(task_name: str, data_source: str, path: Path | None) -> Path:
    """The path a public-format task was given; without one the user must pass --data."""
    if path is None:
        raise UserError(
            f"task '{task_name}' has no shipped data",
            fix=f"pass --data {task_name}=FILE ({data_source})",
        )
    return path


def require_str(obj: Mapping[str, Any], name: str, where: str) -> str:
    """A field that must be a non-empty string (after `require` made sure it is there)."""
    value = obj[name]
    if not isinstance(value, str):
        raise UserError(
            f"field '{name}' must be a string, got {type(value).__name__}",
            where=where,
            fix="check that the file has the expected format for this task",
        )
    if not value.strip():
        raise UserError(f"field '{name}' is empty", where=where, fix="every record needs this field's text")
    return value


def require_str_list(obj: Mapping[str, Any], name: str, where: str) -> list[str]:
    """A field that must be a non-empty list of strings."""
    value = obj[name]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UserError(
            f"field '{name}' must be a non-empty list of strings",
            where=where,
            fix="check that the file has the expected format for this task",
        )
    return value


# --- model output --------------------------------------------------------------------------------


def output_text(outputs: Sequence[Output], stops: Sequence[str] = ()) -> str:
    """The single-stage output's text, cut at the first stop string.

    Backends already stop there; cutting again keeps scoring identical when one of them
    returns the stop string or runs past it.
    """
    text = outputs[0].text if outputs else ""
    for stop in stops:
        head, _, _ = text.partition(stop)
        text = head
    return text


# --- data generation -----------------------------------------------------------------------------


def stable_hash(key: str) -> int:
    """A hash that is the same in every process (Python's `hash` of a str is salted)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def is_test_key(key: str) -> bool:
    """Whether a split key (an entity or number combination) belongs to the test split.

    Generators draw examples for one split only from keys of that split, so train and test
    never share a combination, let alone a prompt.
    """
    return stable_hash(key) % TEST_BUCKETS == 0


def article(word: str) -> str:
    """'a' or 'an' for a word, by its first letter (good enough for our vocabularies)."""
    return "an" if word[0].lower() in "aeiou" else "a"


def jsonl_text(records: Iterable[Mapping[str, Any]]) -> str:
    """Records as JSONL text with a fixed layout, so regenerated files are byte-identical."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


#: What a generator's `make(rng, index)` returns: the split key and the record without its id.
Draw = tuple[str, dict[str, Any]]


def draw_split(
    rng: random.Random, count: int, test: bool, make: Callable[[random.Random, int], Draw], prefix: str
) -> list[dict[str, Any]]:
    """`count` distinct records whose split keys fall in the wanted split, with ids `prefix-00000`...

    `make` gets the index of the record being drawn, so a generator can balance labels by it.
    """
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(count * 1000):
        if len(records) == count:
            return records
        key, record = make(rng, len(records))
        text = json.dumps(record, sort_keys=True)
        if is_test_key(key) != test or text in seen:
            continue
        seen.add(text)
        records.append({"id": f"{prefix}-{len(records):05d}", **record})
    if len(records) == count:
        return records
    raise RuntimeError(f"could only draw {len(records)} of {count} distinct records for {prefix}")


def make_data_main(
    package_file: str, build: Callable[[], dict[str, list[dict[str, Any]]]], argv: Sequence[str] | None = None
) -> None:
    """Command line of a suite's `make_data` module: write each split to OUT/<split>.jsonl."""
    parser = argparse.ArgumentParser(description="Regenerate the shipped data of this suite.")
    parser.add_argument("--out", type=Path, default=data_dir(package_file), help="output folder")
    args = parser.parse_args(argv)
    for split, records in build().items():
        write_atomic(args.out / f"{split}.jsonl", jsonl_text(records))
        print(f"wrote {len(records)} examples to {args.out / f'{split}.jsonl'}")
