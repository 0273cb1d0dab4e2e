"""The gate on an lm-eval multiple-choice task: nli_synth's test set as an lm-eval YAML task, and
the planted regression of tests/test_gate_e2e.py (a student trained fewer steps) caught by the
paired test on lm-eval's per-document rows, while a re-run of the same model passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdeval.cli import main
from tests.lmeval_tasks import local_task_yaml
from tests.test_gate_e2e import LIMIT, students  # noqa: F401  (the trained students fixture)

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow

RULE = "nli_lm.acc,none:-1pt"
YAML = """\
output_type: multiple_choice
doc_to_text: "Premise: {{{{premise}}}}\\nHypothesis: {{{{hypothesis}}}}\\nDoes the premise entail \
the hypothesis? Answer yes, maybe or no.\\nAnswer:"
doc_to_choice: [" yes", " maybe", " no"]
target_delimiter: ""
doc_to_target: "{{{{ {{'entailment': 0, 'neutral': 1, 'contradiction': 2}}[label] }}}}"
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def lm_runs(
    students: dict[str, Path],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch_module: None,
) -> dict[str, Path]:
    import kdeval_suites.nli

    root = tmp_path_factory.mktemp("lmeval_gate")
    data = Path(kdeval_suites.nli.__file__).parent / "data" / "test.jsonl"  # read in place
    (root / "tasks").mkdir()
    (root / "tasks" / "nli_lm.yaml").write_text(local_task_yaml("nli_lm", data, YAML.format()))

    def compare(model: Path, out: Path) -> Path:
        argv = ["compare", "--distilled", str(model), "--backend", "hf", "--no-efficiency", "--quiet"]
        argv += ["--lm-eval-include", str(root / "tasks"), "--lm-eval-task", "nli_lm", "--task", "nli_synth"]
        assert main([*argv, "--limit", str(LIMIT), "--out", str(out)]) == 0
        return out / "results.json"

    return {
        "good": compare(students["good"], root / "good"),
        "rerun": compare(students["good"], root / "rerun"),
        "degraded": compare(students["degraded"], root / "degraded"),
    }


@pytest.fixture(scope="module")
def monkeypatch_module() -> object:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    yield None
    mp.undo()


def _acc(results: Path, metric: str = "acc,none") -> float:
    raw = json.loads(results.read_text())
    return next(float(s["value"]) for s in raw["scores"] if s["metric"] == metric)


def test_gate_catches_the_planted_regression_on_an_lm_eval_task(
    lm_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    good, degraded = _acc(lm_runs["good"]), _acc(lm_runs["degraded"])
    assert good >= 55 and degraded <= good - 10, (good, degraded)  # the plant took
    # the same prompt and choices as kdeval's own nli_synth: the same accuracy
    assert good == _acc(lm_runs["good"], "accuracy") and degraded == _acc(lm_runs["degraded"], "accuracy")
    code = main(["gate", "--baseline", str(lm_runs["good"]), "--candidate", str(lm_runs["degraded"]),
                 "--rule", RULE])  # fmt: skip
    out = capsys.readouterr()
    assert code == 1 and f"FAIL    {RULE}" in out.out + out.err, out


def test_gate_passes_a_rerun_of_the_same_model(
    lm_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["gate", "--baseline", str(lm_runs["good"]), "--candidate", str(lm_runs["rerun"]),
                 "--rule", RULE])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0 and f"pass    {RULE}" in out.out + out.err, out
