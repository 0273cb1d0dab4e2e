"""A third-party suite package, pip-installed, shows up in `kdeval suites` and runs in `compare`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(PKG, tmp / "src")  # builds in a copy, so the repo stays clean
    target = tmp / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        timeout=300,
    )
    return target


def _kdeval(plugin_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_installed_plugin_is_listed(plugin_path: Path) -> None:
    proc = _kdeval(plugin_path, "suites")
    assert proc.returncode == 0, proc.stderr
    assert "| echo | echo | echo_word | 8 | generate |" in proc.stdout
    assert "| echo | echo | echo_colour | 6 | multiple_choice |" in proc.stdout
    assert "| nli_synth |" in proc.stdout  # the built-ins come through the same entry-point group


def test_without_the_plugin_it_is_absent() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", "suites"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "echo_word" not in proc.stdout


@pytest.mark.slow
def test_installed_plugin_runs_in_compare(plugin_path: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _kdeval(
        plugin_path,
        "compare",
        "--model",
        f"tiny={tiny_model_dir}",
        "--suite",
        "echo",
        "--backend",
        "hf",
        "--no-efficiency",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "results.json").read_text())
    assert {t["name"] for t in result["tasks"]} == {"echo_word", "echo_colour"}
    assert {(s["task"], s["metric"]) for s in result["scores"]} == {
        ("echo_word", "exact_match"),
        ("echo_word", "chrf"),
        ("echo_colour", "accuracy"),
    }
    assert len((out / "samples/tiny/echo_word.jsonl").read_text().splitlines()) == 8
