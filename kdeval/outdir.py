"""The output folder of a run: checked before any model loads, and held by one process at a time.

`check_out(out)` refuses a path that is a file, lies inside a file, or cannot be written, without
creating anything. `hold(out, command)` creates the folder and holds OUT/.lock with `fcntl.flock`
while the run writes there; a second run on the same folder stops with one line naming the pid
(and command) of the first. The kernel drops the lock when its process dies, even by kill -9, so
a crashed run never leaves a stale lock: the file stays, its content is only a note of the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kdeval.errors import UserError

LOCK_NAME = ".lock"
#: the folders this process holds (resolved paths) -> the descriptor of each one's lock file
_HELD: dict[Path, int] = {}


def _forget_in_child() -> None:
    """A forked child (an engine's worker) must not keep its parent's lock alive after the parent
    dies: it closes its copies of the lock descriptors, which the parent's copies keep holding."""
    for fd in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def check_out(out: Path, flag: str = "--out", where: str | None = None) -> None:
    """An output folder that exists and is writable, or can be created: else a UserError.
    `flag` names the setting in the message (--out, out:), `where` is its file:line if any."""
    p = out
    if p.exists() and not p.is_dir():
        raise UserError(
            f"{flag} {out} is a file, not a folder",
            where=where,
            fix=f"pass a folder (new or from an earlier run) to {flag}",
        )
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():  # e.g. OUT under a file: a/file.txt/run
        raise UserError(
            f"{flag} {out} cannot be created: {existing} is a file",
            where=where,
            fix=f"pass another folder to {flag}",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {out} cannot be written: no write permission on {existing}",
            where=where,
            fix=f"pass a folder you can write to {flag}, or fix its permissions",
        )
    if existing == p and p.resolve() not in _HELD:
        _check_free(p, flag, where)


def _check_free(out: Path, flag: str, where: str | None) -> None:
    """Refuse early (before a run checks its models or logs a line) if another run holds `out`;
    this opens an existing lock file only, so it writes nothing."""
    try:
        fd = os.open(out / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _unwritable(out, exc, flag, where) from None
    try:
        _lock(fd, out, flag, where)
    finally:
        os.close(fd)  # and with it the lock just taken


def _lock(fd: int, out: Path, flag: str, where: str | None) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(
            f"{flag} {out} is in use by another kdeval run ({_holder(fd)})",
            where=where,
            fix="wait for it to finish, or pass another folder to " + flag,
        ) from None


def _unwritable(out: Path, exc: OSError, flag: str, where: str | None) -> UserError:
    return UserError(
        f"{flag} {out} cannot be written ({exc.strerror or exc})",
        where=where,
        fix=f"pass another folder to {flag}",
    )


@contextmanager
def hold(out: Path, command: list[str], flag: str = "--out", where: str | None = None) -> Iterator[None]:
    """Create `out` and hold its lock for the duration; refuse if another process holds it.
    Re-entrant within a process (a pipeline whose compare: writes into its own out)."""
    check_out(out, flag, where)
    key = out.resolve()
    if key in _HELD:
        yield
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _unwritable(out, exc, flag, where) from None
    owned = True
    try:
        _lock(fd, out, flag, where)
        os.ftruncate(fd, 0)
        note = shlex.join(command).replace("\n", " ")
        os.write(fd, f"{os.getpid()}\n{note}\n".encode())
        _HELD[key] = fd
        try:
            yield
        finally:
            owned = _HELD.pop(key, None) == fd  # not in a forked child: its copy is closed already
            if owned:
                os.ftruncate(fd, 0)  # released below; an empty note means nobody holds it
    finally:
        if owned:
            os.close(fd)  # closing the descriptor releases the lock


def _holder(fd: int) -> str:
    """'pid 123: kdeval compare ...' from the lock file's note (written right after locking)."""
    note = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
    if not note or not note[0].strip().isdigit():
        return "its pid is not written yet"
    pid = note[0].strip()
    command = " ".join(note[1:2]).strip() or _cmdline(pid)
    return f"pid {pid}: {command}" if command else f"pid {pid}"


def _cmdline(pid: str) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return shlex.join(x.decode("utf-8", "replace") for x in raw.split(b"\0") if x)
