"""The trainer at scale, on tiny real models: precision, gradient checkpointing, LoRA, several
processes through accelerate (gloo on CPU), checkpoints across processes, and the bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kdeval.backends import vllm_available
from kdeval.cli import main
from kdeval.distill import DistillConfig, make_config, train
from kdeval.distill.objective import DenseTeacher
from kdeval.distill.setup import prepare
from kdeval.errors import UserError
from kdeval.threads import available_cpus
from kdeval.tinymodels import build_tiny_model
from tests.test_trainer import _one_thread  # noqa: F401  (autouse: one torch thread, as there)

REPO = Path(__file__).resolve().parents[1]
PAIRS = [(f"What is {a} plus {b}?", f" {a + b}") for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (6, 3), (4, 4)]]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scale")
    student = build_tiny_model(root / "student", seed=1)  # the teacher's tokenizer, other weights
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS))
    return {"teacher": tiny_model_dir, "student": student, "train": data, "root": root}


def _values(models: dict[str, Path], out: Path, **kw: Any) -> dict[str, Any]:
    return {
        "student": str(models["student"]),
        "teacher": str(models["teacher"]),
        "train": str(models["train"]),
        "out": str(out),
        "method": "kd",
        "lr": 1e-3,
        "batch_size": 2,
        "grad_accum": 2,
        "epochs": 2,
        "max_len": 32,
        "checkpoint_every": 0,
        **kw,
    }


def _cfg(models: dict[str, Path], out: Path, **kw: Any) -> DistillConfig:
    return make_config(_values(models, out, **kw))


def _weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


def _losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


# -- precision, gradient checkpointing ---------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_losses(models: dict[str, Path], tmp_path: Path) -> None:
    off = train(_cfg(models, tmp_path / "off"), progress=False)
    on = train(_cfg(models, tmp_path / "on", gradient_checkpointing=True), progress=False)
    assert on.final_loss == pytest.approx(off.final_loss, abs=1e-5)
    assert _losses(tmp_path / "on") == pytest.approx(_losses(tmp_path / "off"), abs=1e-5)
    a, b = _weights(tmp_path / "off"), _weights(tmp_path / "on")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_bf16_trains_float32_masters_with_a_bf16_teacher(models: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg(models, tmp_path / "bf16", precision="bf16", epochs=4, lr=3e-3)
    run = prepare(cfg, progress=False)
    teacher = run.objective.teacher
    assert isinstance(teacher, DenseTeacher) and teacher.model.dtype == torch.bfloat16  # inference only
    assert run.student.dtype == torch.float32  # master weights
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from kdeval.distill.data import collate

        sums = run.objective.loss_sums(collate(run.train[:2], run.pad_id), [0, 1])
    assert sums.dtype == torch.float32  # losses stay float32 under autocast
    result = train(cfg, progress=False)
    fp32 = train(cfg.model_copy(update={"out": str(tmp_path / "fp32"), "precision": "fp32"}), progress=False)
    losses = _losses(cfg.out_dir)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert result.final_loss == pytest.approx(fp32.final_loss, rel=0.05)  # bf16 rounding, same run
    assert all(t.dtype == torch.float32 for t in _weights(cfg.out_dir).values())
    assert json.loads((cfg.out_dir / "distill_summary.json").read_text())["precision"] == "bf16"


# -- LoRA -------------------------------------------------------------------------------------


def _lora_run(models: dict[str, Path], out: Path, **kw: Any) -> DistillConfig:
    cfg = _cfg(models, out, method="sft", lora_r=8, lr=2e-2, epochs=20, grad_accum=1, save_adapter=True, **kw)
    train(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def lora_out(models: dict[str, Path]) -> Path:
    return _lora_run(models, models["root"] / "lora").out_dir


def test_lora_output_is_a_plain_merged_model_with_the_adapter_kept(
    models: dict[str, Path], lora_out: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = _weights(lora_out)
    base = _weights(models["student"])
    assert not any("lora" in k for k in merged) and merged.keys() == base.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)  # peft's Llama default
    assert (lora_out / "adapter" / "adapter_config.json").is_file()
    base_model = AutoModelForCausalLM.from_pretrained(models["student"])
    again = PeftModel.from_pretrained(base_model, lora_out / "adapter")
    remerged = again.merge_and_unload().state_dict()
    assert all(torch.allclose(remerged[k], merged[k], atol=1e-6) for k in changed)
    assert _losses(lora_out)[-1] < 0.5 * _losses(lora_out)[0]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
def test_lora_merged_output_gives_the_same_greedy_text_in_vllm_and_transformers(lora_out: Path) -> None:
    from kdeval.backends import load_backend
    from kdeval.backends.base import GenerationSettings, Output
    from kdeval.tasks import GenerateRequest, user_turn

    requests = [GenerateRequest(user_turn(p), max_tokens=6) for p, _ in PAIRS]
    texts: dict[str, list[str]] = {}
    for name in ("hf", "vllm"):  # one engine per backend, closed before the next starts
        backend = load_backend(name, str(lora_out), GenerationSettings(dtype="float32", batch_size=8))
        got: dict[int, Output] = {}
        backend.run(requests, lambda i, out: got.__setitem__(i, out))  # noqa: B023
        backend.close()
        texts[name] = [got[i].text for i in range(len(requests))]
    assert texts["vllm"] == texts["hf"]
    assert sum(t.strip().startswith(r.strip()) for t, (_, r) in zip(texts["hf"], PAIRS, strict=True)) >= 4


# -- bad input: one line, exit 2 ----------------------------------------------------------------


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def _flags(models: dict[str, Path], out: Path) -> list[str]:
    return [
        "distill",
        "--student",
        str(models["student"]),
        "--train",
        str(models["train"]),
        "--out",
        str(out),
    ]


def test_a_lora_target_not_in_the_model_is_one_line_with_close_names(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*_flags(models, tmp_path / "o"), "--method", "sft", "--lora-r", "4"]
    argv += ["--lora-target", "q_prj,v_proj"]
    code, line = _cli(argv, capsys)
    assert code == 2 and "LoRA target module 'q_prj' is not in the model" in line
    assert "did you mean q_proj" in line and str(models["student"]) in line
    if available_cpus() >= 2:  # checked once before the processes start, without loading weights
        code, line = _cli([*argv, "--num-processes", "2"], capsys)
        assert code == 2 and "did you mean q_proj" in line and not (tmp_path / "o").exists()
        bad = tmp_path / "no_response.jsonl"
        bad.write_text('{"prompt": "hi"}\n')
        argv = [*_flags(models, tmp_path / "o"), "--train", str(bad)]  # the last --train counts
        code, line = _cli([*argv, "--method", "sft", "--num-processes", "2"], capsys)
        assert code == 2 and f"{bad}:1: record 'L1' has no 'response'" in line
    code, line = _cli([*_flags(models, tmp_path / "o"), "--method", "sft", "--lora-target", "q_proj"], capsys)
    assert code == 2 and "without lora_r" in line


def test_a_precision_the_device_lacks_is_one_line(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("fp16 trains on a GPU")
    code, line = _cli([*_flags(models, tmp_path / "o"), "--method", "sft", "--precision", "fp16"], capsys)
    assert code == 2 and "fp16 needs a CUDA GPU" in line and "--precision bf16" in line
    assert not (tmp_path / "o").exists()


def test_more_processes_than_devices_is_one_line(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, line = _cli([*_flags(models, tmp_path / "o"), "--method", "sft", "--num-processes", "999"], capsys)
    assert code == 2 and "--num-processes 999 is more than the" in line


@pytest.mark.parametrize(
    ("env", "flags", "says"),
    [
        ({"ACCELERATE_MIXED_PRECISION": "fp16"}, ["--precision", "bf16"], "mixed precision fp16 but"),
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, [], "mixed precision bf16 but --precision is fp32"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, [], "asks for DeepSpeed"),
        ({"WORLD_SIZE": "4"}, ["--num-processes", "2"], "--num-processes 2 but the launcher started 4"),
    ],
)
def test_an_accelerate_launch_that_contradicts_the_flags_is_one_line(
    models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    flags: list[str],
    says: str,
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, line = _cli([*_flags(models, tmp_path / "o"), "--method", "sft", *flags], capsys)
    assert code == 2 and says in line and "\n" not in line


# -- several processes (accelerate launch, gloo) ---------------------------------------------


def _launch(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _kdeval_distill(values: dict[str, Any], *extra: str) -> None:
    argv = [sys.executable, "-m", "kdeval", "distill", "--quiet", *extra]
    for k, v in values.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    proc = _launch(argv)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]


@pytest.fixture(scope="module")
def two_processes(models: dict[str, Path]) -> dict[str, Any]:
    values = _values(models, models["root"] / "two", checkpoint_every=2, epochs=3, seed=5)
    _kdeval_distill(values, "--num-processes", "2")
    return values


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(
    models: dict[str, Path], two_processes: dict[str, Any]
) -> None:
    one = train(make_config({**two_processes, "out": str(models["root"] / "one")}), progress=False)
    two = Path(two_processes["out"])
    summary = json.loads((two / "distill_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == one.steps == 6
    assert summary["tokens"] == one.tokens  # the same global batches
    assert summary["final_loss"] == pytest.approx(one.final_loss, rel=1e-4)
    assert _losses(two) == pytest.approx(_losses(one.out), rel=1e-4)
    a, b = _weights(one.out), _weights(two)
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    steps = [json.loads(x)["step"] for x in (two / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # written by one process


_KILLED_RUN = """
import os, sys, time
from pathlib import Path
from kdeval.distill import load_config, train

def hook(step, loss):
    if step == 3 and os.environ.get("RANK") == "0":  # after the checkpoint of step 2
        Path(sys.argv[2]).write_text(str(os.getpid()))
        time.sleep(600)  # the test SIGKILLs every process of the launch here

train(load_config(Path(sys.argv[1])), progress=False, on_step=hook)
"""


@pytest.mark.slow
def test_sigkill_under_two_processes_then_resume_gives_the_uninterrupted_weights(
    models: dict[str, Path], two_processes: dict[str, Any], tmp_path: Path
) -> None:
    import psutil
    import yaml

    values = {**two_processes, "out": str(tmp_path / "killed")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(values))
    (tmp_path / "run.py").write_text(_KILLED_RUN)
    marker = tmp_path / "at_step_3"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = _launch([*launcher, str(tmp_path / "run.py"), str(tmp_path / "cfg.yaml"), str(marker)])
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()[0].decode()[-3000:]
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(family) >= 3  # the launcher and its two workers
    for p in family:
        p.kill()  # SIGKILL
    proc.wait()
    out = Path(values["out"])
    assert [p.name for p in (out / "checkpoints").glob("*.pt")] == ["step-00000002.pt"]
    assert not (out / "distill_summary.json").exists()
    _kdeval_distill(values, "--num-processes", "2", "--resume")
    done = Path(two_processes["out"])
    a, b = _weights(done), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((out / "distill_summary.json").read_text())
    assert summary["final_loss"] == json.loads((done / "distill_summary.json").read_text())["final_loss"]
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [*range(1, 7)]


def test_the_global_batch_is_split_into_contiguous_shares() -> None:
    from kdeval.distill.accel import Dist

    class Rank:
        def __init__(self, i: int, n: int) -> None:
            self.process_index, self.num_processes = i, n

    ids = list(range(7))
    shares = [Dist(Rank(r, 3), "fp32").share(ids) for r in range(3)]
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]
    assert Dist(Rank(1, 2), "fp32").share([9]) == []  # a rank may get nothing in a short last batch


def test_lora_settings_without_a_rank_are_refused() -> None:
    with pytest.raises(UserError, match="without lora_r"):
        make_config({"student": "s", "train": "t", "out": "o", "method": "sft", "save_adapter": True})
