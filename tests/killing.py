"""Kill a `kdeval compare` with SIGKILL once its store holds some rows (the resume tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def stored_rows(out: Path) -> int:
    with sqlite3.connect(out / "store.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])


def kill_9_after(cmd: list[str], out: Path, rows: int, env: dict[str, str] | None = None) -> None:
    """Start `cmd`, SIGKILL it as soon as `out`'s store has at least `rows` rows."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    seen = 0
    deadline = time.time() + 600
    while seen < rows and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
        if (out / "store.sqlite").exists():
            with contextlib.suppress(sqlite3.OperationalError):
                seen = stored_rows(out)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
