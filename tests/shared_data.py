"""Where the third-party public eval sets live: `../shared/data` beside the repository (as on the
developers' machines and in CI), or $KDEVAL_SHARED_DATA. Tests read them in place, never copy them."""

import os
from pathlib import Path

SHARED = Path(os.environ.get("KDEVAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
