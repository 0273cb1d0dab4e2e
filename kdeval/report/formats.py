"""Number formats every report shares: differences whose sign is always visible, and model paths
that read the same on every machine."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

#: the most decimals a difference gets to show which side of zero it is on
_MAX_DECIMALS = 4


def signed(x: float, decimals: int = 1) -> str:
    """A difference with its sign, and enough decimals that a non-zero value never reads as zero.

    >>> signed(2.04), signed(-0.04), signed(0.00002), signed(0.0)
    ('+2.0', '-0.04', '+2.0e-05', '0.0')
    """
    if x == 0 or not math.isfinite(x):
        return f"{x:.{decimals}f}" if math.isfinite(x) else "—"
    d = decimals
    while round(x, d) == 0 and d < _MAX_DECIMALS:
        d += 1
    return f"{x:+.{d}f}" if round(x, d) != 0 else f"{x:+.1e}"


def signed_interval(low: float, high: float, decimals: int = 1) -> str:
    """'[low, high]' of a difference where it is visible whether 0 is inside: an end never rounds
    to a zero it is not (so "no clear difference" never sits beside "[+0.0, +3.4]").

    >>> signed_interval(0.04, 3.4), signed_interval(-0.1, 2.1), signed_interval(0.0, 1.0)
    ('[+0.04, +3.4]', '[-0.1, +2.1]', '[0.0, +1.0]')
    """
    return f"[{signed(low, decimals)}, {signed(high, decimals)}]"


def portable_path(path: str) -> str:
    """A model path as a report shows it: relative to kdeval's cache (`<cache>/...`), the home
    folder (`~/...`) or the temporary folder (`<tmp>/...`), so a shipped report names no machine's
    folders; other paths (and hub ids, URLs) unchanged.

    >>> portable_path(tempfile.gettempdir() + "/kd-7x/model"), portable_path("Qwen/Qwen3-8B")
    ('<tmp>/kd-7x/model', 'Qwen/Qwen3-8B')
    """
    from kdeval.distill.suitedata import cache_root

    p = Path(path)
    if not p.is_absolute():
        return path
    for label, root in (
        ("<cache>", cache_root()),
        ("<tmp>", Path(tempfile.gettempdir())),
        ("~", Path.home()),
    ):
        try:
            return f"{label}/{p.resolve().relative_to(root.expanduser().resolve()).as_posix()}"
        except ValueError:
            continue
    return path
