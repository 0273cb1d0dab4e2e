"""The per-sample store: every model output is written (and committed) the moment it completes.

Rows are content-addressed: the key hashes the model fingerprint, the run settings and the
request itself (messages, choices, limits). A re-run, or a run resumed after `kill -9`,
finds every completed request by key and computes only what is missing; a changed checkpoint
has a new fingerprint, so only that model runs again.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from kdeval.config import digest
from kdeval.tasks import Output, Request

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    example_id TEXT NOT NULL,
    stage INTEGER NOT NULL,
    output TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_info (key TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fidelity (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    example_id TEXT NOT NULL,
    row TEXT NOT NULL
);
"""


def request_key(model_fp: str, settings_hash: str, request: Request) -> str:
    fields = asdict(request)
    for name in _UNSET_NOT_KEYED:  # fields added later key only when set, so older stores stay valid
        if fields.get(name) is None:
            fields.pop(name, None)
    return digest({"m": model_fp, "s": settings_hash, "kind": type(request).__name__, "r": fields})


_UNSET_NOT_KEYED = ("think", "seed", "prompt", "contexts", "rolling")


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # WAL + synchronous=NORMAL: a commit survives the process being killed (not a power cut),
        # at a fraction of the cost of a full fsync per row.
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, Output]:
        found: dict[str, Output] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in self._db.execute(
                f"SELECT key, output FROM outputs WHERE key IN ({marks})", chunk
            ):
                found[key] = Output.from_dict(json.loads(blob))
        return found

    def put(self, key: str, model: str, task: str, example_id: str, stage: int, output: Output) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?)",
            (key, model, task, example_id, stage, json.dumps(output.to_dict())),
        )
        self._db.commit()

    def put_info(self, key: str, info: dict[str, object]) -> None:
        """Facts about a loaded model (chat template, parameters), kept so a fully reused model
        is reported without loading it again."""
        self._db.execute("INSERT OR REPLACE INTO model_info VALUES (?, ?)", (key, json.dumps(info)))
        self._db.commit()

    def get_info(self, key: str) -> dict[str, object] | None:
        row = self._db.execute("SELECT info FROM model_info WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def get_rows(self, keys: list[str]) -> dict[str, list[float]]:
        """Stored per-example fidelity rows (kdeval.fidelity) by key."""
        found: dict[str, list[float]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in self._db.execute(f"SELECT key, row FROM fidelity WHERE key IN ({marks})", chunk):
                found[key] = json.loads(blob)
        return found

    def put_row(self, key: str, model: str, task: str, example_id: str, row: list[float]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO fidelity VALUES (?, ?, ?, ?, ?)",
            (key, model, task, example_id, json.dumps(row)),
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()
