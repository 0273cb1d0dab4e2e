"""Where the third-party public eval sets live: `../shared/data` beside the repository (as on the
developers' machines and in CI), or $KDEVAL_SHARED_DATA. Tests read them in place, never copy them."""

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("KDEVAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

#: Marks a test that reads the shared public data; the skip reason names where it looked.
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"shared public data not found at {SHARED} (set KDEVAL_SHARED_DATA to its folder)",
)
