"""Loading one registered object ("module:attr") for the registries of kdeval's extension points
(backends, metrics, loss methods): a built-in's import error is a bug and propagates; a plugin's
is one line naming the plugin."""

from __future__ import annotations

import importlib
from typing import Any

from kdeval.errors import UserError


def load_target(kind: str, name: str, target: str, *, builtin: bool) -> Any:
    """The object `target` ("module:attr") names, registered as `name` in the `kind` registry."""
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as exc:
        if builtin:
            raise
        raise UserError(f"{kind} plugin '{name}' ({target}) failed to load: {exc}") from None
