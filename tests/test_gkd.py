"""On-policy distillation (--method gkd) on tiny real models, against TRL's GKDTrainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdeval.backends.prompting import PromptCodec
from kdeval.distill import train
from kdeval.distill.data import IGNORE, TokenizedExample, collate, read_records, tokenize
from kdeval.distill.losses import LossSpec, TeacherTarget, chunked_loss_sums
from kdeval.distill.models import load_model
from kdeval.distill.onpolicy import OnPolicy
from kdeval.distill.setup import prepare
from tests import test_trainer as shared
from tests.test_trainer import _cfg, _weights

models, _one_thread = shared.models, shared._one_thread  # the trainer tests' tiny models (fixtures)

trl_gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")


Tensor = torch.Tensor


def _trl_loss(s_logits: Tensor, t_logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """TRL 1.16's GKD loss as its compute_loss calls it: shifted logits and labels, batchmean."""
    return trl_gkd.GKDTrainer.generalized_jsd_loss(
        s_logits[:, :-1], t_logits[:, :-1], labels=labels[:, 1:], beta=beta
    )


def _kdeval_loss(s_logits: Tensor, t_logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """kdeval's gkd loss on the same logits: the valid shifted rows, chunked, summed, averaged."""
    valid = labels[:, 1:] != IGNORE
    rows_s, rows_t = s_logits[:, :-1][valid], t_logits[:, :-1][valid]
    spec = LossSpec("gkd", alpha=0.0, beta=beta)

    def teacher(a: int, b: int) -> TeacherTarget:
        return TeacherTarget(F.log_softmax(rows_t[a:b], -1))

    sums = chunked_loss_sums(spec, rows_s, lambda h: h, labels[:, 1:][valid], teacher, chunk_size=5)
    return spec.combine(sums, int(valid.sum()))


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_the_loss_and_its_gradient_equal_trls_generalized_jsd_loss(beta: float) -> None:
    g = torch.Generator().manual_seed(int(beta * 10))
    s_logits = (3 * torch.randn(3, 9, 17, generator=g)).requires_grad_(True)
    t_logits = 3 * torch.randn(3, 9, 17, generator=g)
    labels = torch.randint(0, 17, (3, 9), generator=g)
    labels[:, :3] = IGNORE  # prompts
    labels[1, 6:] = IGNORE  # padding
    want = _trl_loss(s_logits, t_logits, labels, beta)
    (want_grad,) = torch.autograd.grad(want, s_logits)
    got = _kdeval_loss(s_logits, t_logits, labels, beta)
    (got_grad,) = torch.autograd.grad(got, s_logits)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-7)


def test_the_trainers_loss_on_tiny_models_equals_trls(models: dict[str, Path], tmp_path: Path) -> None:
    """The objective the trainer runs (student + dense teacher, gkd spec) on the models' own logits."""
    cfg = _cfg(models, tmp_path / "out", method="gkd", beta=0.3)
    assert cfg.alpha == 0.0  # TRL's GKD loss is the generalized JSD alone
    run = prepare(cfg, progress=False)
    batch = collate(run.train[:3], run.pad_id)
    sums = run.objective.loss_sums(batch, [0, 1, 2])
    got = run.spec.combine(sums, batch.n_targets)
    teacher = load_model(str(models["teacher"]))
    with torch.no_grad():
        s = run.student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        t = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    vocab = len(run.tokenizer)
    want = _trl_loss(s[..., :vocab], t[..., :vocab], batch.labels, 0.3)
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def _on_policy(models: dict[str, Path], **kw: float) -> tuple[OnPolicy, PromptCodec, list[TokenizedExample]]:
    codec = PromptCodec.from_pretrained(str(models["teacher"]))
    examples = tokenize(read_records(models["train"]), codec, 32)
    values = {"lmbda": 1.0, "temperature": 0.0, "max_new_tokens": 5, "max_len": 32, "seed": 0, **kw}
    how = OnPolicy(pad_id=codec.pad_id, eos_ids=tuple(codec.eos_ids), **values)  # type: ignore[arg-type]
    return how, codec, examples


def test_the_student_writes_what_it_generates_alone(models: dict[str, Path]) -> None:
    """Batched left-padded generation gives each prompt the greedy continuation it gets alone;
    the prompt is kept and the response is what the loss trains on."""
    how, codec, examples = _on_policy(models)
    student = load_model(str(models["student"]))
    written = how.examples(student, examples, step=0, micro=0)
    for e, w in zip(examples, written, strict=True):
        prompt = list(e.input_ids[: e.n_prompt])
        assert list(w.input_ids[: w.n_prompt]) == prompt and 1 <= w.n_response <= 5
        alone = student.generate(  # type: ignore[operator]
            input_ids=torch.tensor([prompt]), max_new_tokens=5, do_sample=False, pad_token_id=codec.pad_id
        )[0, len(prompt) :].tolist()
        stop = next((i + 1 for i, t in enumerate(alone) if t in codec.eos_ids), len(alone))
        assert list(w.input_ids[w.n_prompt :]) == alone[:stop]
    assert student.training is False  # load_model's state is kept (eval), as it was


def test_the_draws_are_seeded_and_take_a_share_lmbda(models: dict[str, Path]) -> None:
    how, _, examples = _on_policy(models, lmbda=0.3, temperature=1.0, max_new_tokens=6)
    draws = [how.chosen(step, micro) for step in range(400) for micro in range(5)]
    assert abs(sum(draws) / len(draws) - 0.3) < 0.03
    assert draws == [how.chosen(step, micro) for step in range(400) for micro in range(5)]
    student = load_model(str(models["student"]))
    step = next(s for s in range(100) if how.chosen(s, 0))
    torch.manual_seed(123)  # the global RNG plays no part
    a = how.examples(student, examples, step, 0)
    torch.manual_seed(456)
    assert how.examples(student, examples, step, 0) == a and a != examples
    assert how.examples(student, examples, step + 1, 0) != a  # a new step, new samples
    assert OnPolicy(**{**how.__dict__, "lmbda": 0.0}).examples(student, examples, step, 0) == examples


def test_lmbda_zero_is_the_supervised_jsd_path(models: dict[str, Path], tmp_path: Path) -> None:
    kw = {"beta": 0.3, "alpha": 0.0, "epochs": 2, "seed": 1}
    gkd = train(_cfg(models, tmp_path / "gkd", method="gkd", lmbda=0.0, **kw), progress=False)
    jsd = train(_cfg(models, tmp_path / "jsd", method="jsd", **kw), progress=False)
    assert gkd.final_loss == jsd.final_loss
    a, b = _weights(tmp_path / "gkd"), _weights(tmp_path / "jsd")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _divergence_on(cfg_out: Path, models: dict[str, Path], tmp_path: Path) -> float:
    """The generalized JSD of a student from the teacher on the gold training responses."""
    cfg = _cfg(models, tmp_path / "probe", method="jsd", alpha=0.0, beta=0.5, student=str(cfg_out))
    run = prepare(cfg, progress=False)
    batch = collate(run.train, run.pad_id)
    with torch.no_grad():
        sums = run.objective.loss_sums(batch, list(range(len(run.train))))
    return float(sums[1]) / batch.n_targets


def test_a_short_on_policy_run_brings_the_student_closer_to_the_teacher(
    models: dict[str, Path], tmp_path: Path
) -> None:
    cfg = _cfg(
        models, tmp_path / "gkd", method="gkd", lmbda=0.5, student_max_tokens=6, epochs=10, lr=1e-2, seed=2
    )
    result = train(cfg, progress=False)
    log = [json.loads(x) for x in (cfg.out_dir / "train_log.jsonl").read_text().splitlines()]
    assert result.steps == 30 and all(r["ce"] >= 0 and r["div"] >= 0 for r in log)
    before = _divergence_on(models["student"], models, tmp_path / "a")
    after = _divergence_on(cfg.out_dir, models, tmp_path / "b")
    assert after < 0.7 * before
    first, last = log[:3], log[-3:]
    assert sum(r["loss"] for r in last) < sum(r["loss"] for r in first)


def test_resume_after_a_crash_samples_the_same_responses(models: dict[str, Path], tmp_path: Path) -> None:
    kw = {"method": "gkd", "lmbda": 0.7, "epochs": 2, "batch_size": 1, "grad_accum": 2}
    kw |= {"checkpoint_every": 2, "student_temperature": 1.0, "student_max_tokens": 4, "seed": 5}
    full = train(_cfg(models, tmp_path / "full", **kw), progress=False)

    def crash(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    cfg = _cfg(models, tmp_path / "resumed", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=crash)
    resumed = train(cfg, resume=True, progress=False)
    assert resumed.resumed_from == 2 and resumed.final_loss == full.final_loss
    assert resumed.tokens == full.tokens
    a, b = _weights(tmp_path / "full"), _weights(cfg.out_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lmbda", "1.5"], "lmbda: Input should be less than or equal to 1"),
        (["--lmbda", "-0.1"], "lmbda: Input should be greater than or equal to 0"),
        (["--beta", "2"], "beta: Input should be less than or equal to 1"),
        (["--student-temperature", "-1"], "student_temperature: Input should be greater than or equal to 0"),
        (["--topk", "4"], "topk applies to kd, jsd, tvd, skl only, not 'gkd'"),
        (["--teacher", "http://127.0.0.1:9/v1"], "needs the teacher loaded here"),
        (["--train", "nli_synth", "--num-processes", "2"], "trains in one process only"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdeval.cli import main

    argv = ["distill", "--method", "gkd", "--student", "s", "--teacher", "t", "--train", "x"]
    assert main([*argv, "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdeval: error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_the_distill_command_runs_gkd(models: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    from kdeval.cli import main

    out = tmp_path / "out"
    argv = ["distill", "--method", "gkd", "--lmbda", "0.5", "--beta", "0.2", "--student-max-tokens", "4"]
    argv += ["--student", str(models["student"]), "--teacher", str(models["teacher"]), "--quiet"]
    argv += ["--train", str(models["train"]), "--out", str(out), "--max-len", "32", "--epochs", "1"]
    assert main(argv) == 0 and (out / "model.safetensors").is_file()
    saved = yaml.safe_load((out / "distill_config.yaml").read_text())
    assert (saved["method"], saved["lmbda"], saved["beta"], saved["alpha"]) == ("gkd", 0.5, 0.2, 0.0)
    assert saved["student_max_tokens"] == 4
