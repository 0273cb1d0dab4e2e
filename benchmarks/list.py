"""List the benchmarks: each one's first docstring line and its usage (reads files, imports nothing).

    python benchmarks/list.py

None of them has a quick mode: each needs a real engine (vLLM; most want a GPU) and minutes, so
`tox -e bench` lists them and you run the one you need from a dev install.
"""

from __future__ import annotations

import ast
from pathlib import Path


def main() -> None:
    here = Path(__file__).parent
    for path in sorted(here.glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        lines = doc.splitlines()
        usage = [ln.strip() for ln in lines if ln.strip().startswith("python ")]
        print(f"{path.relative_to(here.parent)}: {lines[0] if lines else '(no docstring)'}")
        print(f"    {usage[0] if usage else f'python {path.relative_to(here.parent)}'}")


if __name__ == "__main__":
    main()
