"""Token-level fidelity against a direct computation with torch.distributions, on tiny models."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from kdeval.distill.data import TokenizedExample
from kdeval.distill.models import load_model
from kdeval.fidelity.compute import DenseTeacher, example_rows
from kdeval.fidelity.measures import MEASURES, WIDTH


def _examples(vocab: int, n: int = 6) -> list[list[TokenizedExample]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        stages = []
        for _ in range(1 + i % 2):  # some examples have two stages
            length = int(torch.randint(5, 14, (1,), generator=g))
            ids = torch.randint(3, vocab, (length,), generator=g).tolist()
            stages.append(TokenizedExample(tuple(ids), 2 + i % 3))
        out.append(stages)
    return out


def _rows(
    student: torch.nn.Module, teacher: DenseTeacher, examples: list[list[TokenizedExample]]
) -> np.ndarray:
    got: dict[int, list[float]] = {}
    example_rows(
        student,
        teacher.vocab,
        examples,
        teacher,
        pad_id=0,
        on_done=got.__setitem__,
        batch_size=4,
        chunk_size=7,
    )
    return np.array([got[i] for i in range(len(examples))])


def _value(name: str, rows: np.ndarray) -> float:
    return MEASURES[name].metric.corpus(rows)


def _direct(
    teacher: torch.nn.Module, student: torch.nn.Module, examples: list[list[TokenizedExample]]
) -> dict[str, float]:
    """Per-token means computed one sequence at a time with torch.distributions."""
    kl, rkl, jsd, top1, nll, n = 0.0, 0.0, 0.0, 0.0, 0.0, 0
    conf, hit = [], []
    with torch.no_grad():
        for seq in (s for ex in examples for s in ex):
            ids = torch.tensor([seq.input_ids])
            rows = slice(seq.n_prompt - 1, len(seq.input_ids) - 1)
            t = Categorical(logits=teacher(ids).logits[0, rows].double())
            s = Categorical(logits=student(ids).logits[0, rows].double())
            m = Categorical(probs=(t.probs + s.probs) / 2)
            kl += float(kl_divergence(t, s).sum())
            rkl += float(kl_divergence(s, t).sum())
            jsd += float((kl_divergence(t, m) + kl_divergence(s, m)).sum() / 2)
            top1 += float((t.probs.argmax(-1) == s.probs.argmax(-1)).sum())
            nll += float(-s.log_prob(ids[0, seq.n_prompt :]).sum())
            conf += s.probs.max(-1).values.tolist()
            hit += (s.probs.argmax(-1) == ids[0, seq.n_prompt :]).tolist()
            n += len(seq.input_ids) - seq.n_prompt
    c, h = np.array(conf), np.array(hit, dtype=float)
    bins = np.minimum((c * 15).astype(int), 14)  # 15 equal-width bins
    ece = sum(abs(c[bins == b].sum() - h[bins == b].sum()) for b in range(15)) / n
    return {
        "kl": kl / n,
        "rkl": rkl / n,
        "jsd": jsd / n,
        "top1": 100 * top1 / n,
        "nll": nll / n,
        "ece": 100 * ece,
    }


@pytest.fixture(scope="module")
def pair(tiny_model_dir: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    teacher = load_model(str(tiny_model_dir), device="cpu").eval()
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return teacher, student


def test_identical_models_have_zero_kl_and_full_agreement(
    pair: tuple[torch.nn.Module, torch.nn.Module],
) -> None:
    teacher, _ = pair
    vocab = teacher.config.vocab_size
    rows = _rows(teacher, DenseTeacher(teacher, vocab), _examples(vocab))
    assert rows.shape[1] == WIDTH
    assert _value("kl", rows) == pytest.approx(0.0, abs=1e-6)
    assert _value("rkl", rows) == pytest.approx(0.0, abs=1e-6)
    assert _value("jsd", rows) == pytest.approx(0.0, abs=1e-6)
    assert _value("top1", rows) == 100.0


def test_perturbed_student_matches_torch_distributions(pair: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    teacher, student = pair
    vocab = teacher.config.vocab_size
    examples = _examples(vocab)
    rows = _rows(student, DenseTeacher(teacher, vocab), examples)
    want = _direct(teacher, student, examples)
    assert 1e-3 < want["kl"] < 1.0  # a small, non-zero divergence
    for name, value in want.items():
        assert _value(name, rows) == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert _value("ppl", rows) == pytest.approx(np.exp(want["nll"]), rel=1e-4)


def test_topk_with_k_equal_to_the_vocabulary_is_the_dense_result(
    pair: tuple[torch.nn.Module, torch.nn.Module],
) -> None:
    teacher, student = pair
    vocab = teacher.config.vocab_size
    examples = _examples(vocab)
    dense = _rows(student, DenseTeacher(teacher, vocab), examples)
    full = _rows(student, DenseTeacher(teacher, vocab, k=vocab), examples)
    np.testing.assert_allclose(full, dense, rtol=1e-6, atol=1e-9)
    coarse = _rows(student, DenseTeacher(teacher, vocab, k=5), examples)
    for name in ("kl", "rkl", "jsd"):  # the data-processing inequality: a lower bound
        assert 0.0 <= _value(name, coarse) <= _value(name, dense) + 1e-9, name
    for name in ("top1", "nll", "ece"):  # from the student's full distribution and the teacher's argmax
        assert _value(name, coarse) == pytest.approx(_value(name, dense), rel=1e-6), name


# -- the phase in `kdeval compare` -----------------------------------------------------------------


@pytest.fixture(scope="module")
def other_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kdeval.tinymodels import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_v500") / "model", seed=3, vocab_size=500)


def _compare(out: Path, teacher: Path, *students: str, extra: tuple[str, ...] = ()) -> tuple[dict, str]:
    import json
    import subprocess
    import sys

    args = ["compare", "--teacher", str(teacher), *students, "--backend", "hf", "--task", "nli_synth"]
    args += ["--task", "qa_synth", "--limit", "3", "--no-efficiency", "--out", str(out), *extra]
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), proc.stderr


def test_compare_reports_fidelity_per_student(
    tiny_model_dir: Path, tiny_model_dir_b: Path, other_vocab_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    students = ["--distilled", str(tiny_model_dir), "--baseline", str(tiny_model_dir_b)]
    result, _ = _compare(out, tiny_model_dir, *students, "--model", f"other={other_vocab_dir}")
    rows = {(f["model"], f["scope"], f["name"], f["measure"]): f for f in result["fidelity"]}
    same = rows[("distilled", "overall", "overall", "kl")]
    assert same["value"] == pytest.approx(0.0, abs=1e-6) and same["source"] == "dense"
    assert rows[("distilled", "task", "qa_synth", "top1")]["value"] == 100.0
    kl = rows[("baseline", "task", "qa_synth", "kl")]
    assert kl["value"] > 0.01 and kl["ci_low"] <= kl["value"] <= kl["ci_high"] and kl["n"] == 3
    assert (
        rows[("baseline", "task", "nli_synth", "top1")]["tokens"] >= 3
    )  # the teacher's chosen continuations
    other = rows[("other", "overall", "overall", "kl")]
    assert other["value"] is None and other["note"] == "tokenizers differ"
    assert not any(f["model"] == "other" and f["value"] is not None for f in result["fidelity"])
    report = (out / "report.md").read_text()
    assert "## Fidelity to the teacher" in report and "—: tokenizers differ [1]" in report

    from kdeval.cli import main

    results = str(out / "results.json")
    gate = ["gate", "--baseline", results, "--candidate", results]
    assert (
        main([*gate, "--rule", "fidelity.kl<=0.8", "--rule", "fidelity.top1>=60%"]) == 0
    )  # distilled = teacher
    assert main([*gate, "--model", "baseline", "--rule", "fidelity.qa_synth.kl<=0.001"]) == 1
    assert main([*gate, "--model", "other", "--rule", "fidelity.kl<=0.8"]) == 2  # no numbers: never a pass
    assert main([*gate, "--rule", "agreement.chrf>=99", "--rule", "agreement.qa_synth.rougeL>=99"]) == 0
    assert main([*gate, "--model", "baseline", "--rule", "agreement.chrf>=99"]) == 1
    sim = {(s["model"], s["scope"], s["name"], s["metric"]): s for s in result["similarity"]}
    assert sim[("distilled", "task", "qa_synth", "chrf")]["value"] == 100.0
    assert (
        "baseline",
        "task",
        "nli_synth",
        "chrf",
    ) not in sim  # multiple choice: exact agreement says it all
    assert "## Agreement with the teacher on free text" in report
    board = tmp_path / "board.md"
    assert main(["leaderboard", results, "--sort", "fidelity.kl", "--out", str(board)]) == 0
    lines = board.read_text().splitlines()
    assert "| KL to teacher | top-1 agree % |" in lines[4]
    assert lines[6].startswith("| 1 | distilled |") and "| 0.000 | 100.0 |" in lines[6]

    again, log = _compare(out, tiny_model_dir, *students, extra=("--model", f"other={other_vocab_dir}"))
    assert "baseline: fidelity (dense teacher): 6 of 6 examples reused from the store, 0 to run" in log
    assert again["fidelity"] == result["fidelity"]

    skipped, _ = _compare(tmp_path / "off", tiny_model_dir, *students, extra=("--no-fidelity",))
    assert "fidelity" not in skipped  # written only when the run has it


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_topk_teacher_is_within_the_bound_of_the_dense_one(
    vllm_loaded: None, tiny_model_dir: Path, pair: tuple[torch.nn.Module, torch.nn.Module]
) -> None:
    """vLLM's top-k prompt_logprobs (+ tail bucket) give the same numbers as the top-k of the
    transformers teacher, and KL / reverse KL / JSD at most the dense values (the documented bound)."""
    from kdeval.backends import vllm_available

    if not vllm_available():
        pytest.skip("vllm is not installed")
    from kdeval.backends.base import GenerationSettings
    from kdeval.backends.vllm import VLLMBackend
    from kdeval.fidelity.compute import ServedTeacher

    teacher, student = pair
    vocab = teacher.config.vocab_size
    examples = _examples(vocab)
    settings = GenerationSettings(dtype="float32", max_model_len=64)
    engine = VLLMBackend(str(tiny_model_dir), settings, max_logprobs=vocab)
    try:
        served = _rows(student, ServedTeacher(engine, vocab, 20), examples)
        served_all = _rows(student, ServedTeacher(engine, vocab, vocab), examples)
    finally:
        engine.close()
    local = _rows(student, DenseTeacher(teacher, vocab, k=20), examples)
    dense = _rows(student, DenseTeacher(teacher, vocab), examples)
    for name in ("kl", "rkl", "jsd"):
        assert _value(name, served) == pytest.approx(_value(name, local), rel=1e-3, abs=1e-4), name
        assert 0.0 < _value(name, served) <= _value(name, dense) + 1e-4, name  # the lower bound
        assert _value(name, served_all) == pytest.approx(_value(name, dense), rel=1e-3, abs=1e-4), name
    for name in ("top1", "nll", "ece"):
        assert _value(name, served) == pytest.approx(_value(name, dense), rel=1e-4, abs=1e-3), name


def test_graded_similarity_is_sacrebleu_chrf_against_the_teacher() -> None:
    from sacrebleu.metrics import CHRF

    from kdeval.similarity import example_rows, similarity_rows

    student = ["the cat sat on the mat", "a dog ran", "completely different"]
    teacher = ["the cat sat on a mat", "the dog ran away", "nothing alike here"]
    rows = {("s", "chrf"): {"t": example_rows("chrf", student, teacher)}}
    (task, _, overall) = similarity_rows(rows, "teacher", {"t": "fam"}, seed=0, n_resamples=200)
    assert task.value == pytest.approx(CHRF().corpus_score(student, [teacher]).score)
    assert task.ci_low is not None and task.ci_high is not None and task.ci_low < task.value < task.ci_high
    assert overall.scope == "overall" and overall.value == pytest.approx(task.value)


def test_a_perplexity_task_is_teacher_forced_on_its_document_in_rolling_windows() -> None:
    """lm-eval's loglikelihood_rolling requests have no choice to pick: the student is forced on the
    document itself, in the windows its log-likelihood was scored in (the whole text, once)."""
    from types import SimpleNamespace

    from transformers import PreTrainedTokenizerFast

    from kdeval.backends.prompting import PromptCodec
    from kdeval.fidelity.sequences import example_sequences
    from kdeval.tasks import ChoiceRequest, Example, Output
    from kdeval.tinymodels import BOS, EOS, PAD, train_bpe

    text = "the cat sat on the mat and the dog sat on the log. " * 6
    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe([text] * 5, 300), bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    codec = PromptCodec(tok)
    req = ChoiceRequest(messages=(), choices=(text,), rolling=True)
    task = SimpleNamespace(task_type="multiple_choice", request=lambda example, history: req)
    ids = codec.encode_raw(text)
    for window in (2048, 16):  # one window, then several disjoint ones
        seqs = example_sequences(
            task, Example("d", {}), [Output(prompt="", choice_logprobs=[-3.0])], codec, window
        )
        targets = [t for s in seqs for t in s.input_ids[s.n_prompt :]]
        assert targets == list(ids), window  # every document token is predicted exactly once
        assert all(len(s.input_ids) <= window for s in seqs) and (len(seqs) > 1) == (window == 16)
