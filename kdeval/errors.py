"""User-facing errors: one line (what, where, how to fix), exit code 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error the user caused and can fix. The CLI prints it as one line and exits with 2.

    >>> str(UserError("bad line", where="data.jsonl:3", fix="fix the JSON"))
    'data.jsonl:3: bad line; fix the JSON'
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what, self.where, self.fix = what, where, fix
        text = f"{where}: {what}" if where else what
        if fix:
            text = f"{text}; {fix}"
        super().__init__(text)
