"""The lm-eval extra from the command line: nothing imported unless asked for, and each user
error (extra missing, unknown task, data not loadable offline, bad --metric) one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.lmeval_tasks import write_tasks

if TYPE_CHECKING:
    from tests.servers import VLLMServer

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _kdeval(*args: str, pre: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys\n{pre}\nfrom kdeval.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **OFFLINE},
    )


def _lmeval_error(model: str, tmp_path: Path, task: str, *extra: str, include: Path | None = None) -> str:
    """The one-line error of `kdeval compare --model m=MODEL --lm-eval-task TASK ...` on the test tasks."""
    pytest.importorskip("lm_eval")
    folder = include or write_tasks(tmp_path / "tasks")
    proc = _kdeval(
        "compare", "--model", f"m={model}", "--lm-eval-include", str(folder), "--lm-eval-task", task,
        *extra, "--no-efficiency", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    line = _one_line_error(proc)
    assert not (tmp_path / "out").exists()
    return line


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("kdeval: error:"), proc.stderr[-2000:]
    return lines[0]


def test_help_and_an_ordinary_run_import_neither_lm_eval_nor_evaluate(tmp_path: Path) -> None:
    code = (
        "import sys, contextlib, io\n"
        "from kdeval.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['compare', '--help'])\n"
        "from kdeval.config import RunSpec, ModelSpec\n"
        "from kdeval.plugins import load_catalog\n"
        "from kdeval.runner import load_tasks\n"
        "from kdeval.metrics import get_metric, is_known\n"
        "spec = RunSpec(models=[ModelSpec(name='m', path='x')], suites=['nli'], limit=2)\n"
        "assert load_tasks(spec, load_catalog()) and is_known('acc,none')\n"
        "assert get_metric('acc,none').corpus([[1.0, 1.0], [0.0, 1.0]]) == 50.0\n"
        "print(sorted({'lm_eval', 'evaluate', 'datasets'} & set(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_missing_extra_is_one_line(tiny_model_dir: Path) -> None:
    # sys.modules[name] = None makes `import name` fail as if it were not installed
    proc = _kdeval(
        "compare", "--model", f"m={tiny_model_dir}", "--lm-eval-task", "kd_mc", "--no-efficiency",
        pre="sys.modules['lm_eval'] = None",
    )  # fmt: skip
    line = _one_line_error(proc)
    assert "lm_eval is not installed" in line and 'pip install "kdeval[lm-eval]"' in line


@pytest.mark.slow
def test_unknown_task_names_close_matches(tiny_model_dir: Path, tmp_path: Path) -> None:
    line = _lmeval_error(str(tiny_model_dir), tmp_path, "kd_mcq")
    assert "no such lm-eval task" in line and "did you mean kd_mc" in line


@pytest.mark.slow
def test_dataset_not_loadable_offline_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "hub.yaml").write_text(
        "task: kd_hub\ndataset_path: no-such-org/no-such-dataset\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: ['a', 'b']\ndoc_to_target: 0\n"
        "metric_list:\n  - metric: acc\n"
    )
    line = _lmeval_error(str(tiny_model_dir), tmp_path, "kd_hub", include=tmp_path)
    assert "lm-eval task kd_hub: could not be built" in line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("kd_mc=rouge", "--metric expects TASK=evaluate:PATH_OR_ID"),
        ("nope=evaluate:accuracy", "'nope' is not a task of this run"),
        ("kd_mc=evaluate:/no/such/module", "could not load it"),
    ],
)
def test_bad_metric_flags_are_one_line(
    tiny_model_dir: Path, tmp_path: Path, flag: str, expected: str
) -> None:
    pytest.importorskip("evaluate")
    assert expected in _lmeval_error(str(tiny_model_dir), tmp_path, "kd_mc", "--metric", flag)


@pytest.mark.slow
def test_a_server_model_is_refused_for_lm_eval_tasks(vllm_server: VLLMServer, tmp_path: Path) -> None:
    line = _lmeval_error(vllm_server.base_url, tmp_path, "kd_mc")
    assert "is a server: lm-eval tasks (kd_mc) run on local backends only" in line
