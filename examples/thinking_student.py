"""Train a tiny student that thinks, then measure it: `python examples/thinking_student.py [OUT]`.

The loop of a reasoning distillation (the R1-Distill recipe) on models built here in seconds:

1. a tiny *teacher* that thinks: trained to answer 24 math training questions with a
   `<think>` trace (its chat template opens the trace, as DeepSeek-R1-Distill's does), then an answer;
2. `kdeval distill --method seqkd`: the teacher answers the prompts, and a randomly initialised
   student with the same tokenizer learns the teacher's whole answers, traces included;
3. `kdeval compare`: both on the math task's test questions; the report's "Answers and thinking"
   table shows that the student now thinks (traces, closed or not, thinking and answer tokens).

The models are far too small to get the arithmetic right on unseen questions; what the example
shows is the loop and the thinking format carried from teacher to student. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

N_TRAIN = 24
SUITE_DATA = Path(__file__).resolve().parents[1] / "suites" / "math" / "data"


def _render(user_text: str) -> str:
    """The thinking chat template, rendered as transformers renders it."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from kdeval.tinymodels import BOS, THINK_TEMPLATE

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    chat = [{"role": "user", "content": user_text}]
    return env.from_string(THINK_TEMPLATE).render(messages=chat, bos_token=BOS, add_generation_prompt=True)


def _teacher_pairs() -> list[tuple[str, str, str]]:
    """(user message, rendered prompt, the teacher's answer: trace, </think>, final answer)."""
    lines = (SUITE_DATA / "train.jsonl").read_text().splitlines()[:N_TRAIN]
    out = []
    for rec in map(json.loads, lines):
        *steps, final = rec["answer"].split("\n")
        trace = "Let me think. " + "\n".join(steps)
        user = f"Question: {rec['question']}\nAnswer:"
        out.append((user, _render(user), f"{trace}\n</think>\nThe answer is {final}"))
    return out


def _random_student(teacher: Path, path: Path) -> Path:
    """The teacher's architecture and tokenizer with fresh random weights."""
    import shutil

    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    for f in teacher.iterdir():
        if f.is_file() and "tokenizer" in f.name or f.name.endswith((".jinja", "special_tokens_map.json")):
            shutil.copy(f, path / f.name)
    torch.manual_seed(1)
    LlamaForCausalLM(AutoConfig.from_pretrained(teacher)).save_pretrained(path, safe_serialization=True)
    return path


def _kdeval(*args: str, quiet: bool = False) -> None:
    print("$ kdeval " + " ".join(args), flush=True)
    out = subprocess.DEVNULL if quiet else None
    subprocess.run([sys.executable, "-m", "kdeval.cli", *args], check=True, stdout=out)


def main(out: Path) -> None:
    from kdeval.tinymodels import build_memorizing_model

    pairs = _teacher_pairs()
    teacher = build_memorizing_model(out / "teacher", [(p, c) for _, p, c in pairs])
    student = _random_student(teacher, out / "student_init")
    train = out / "train.jsonl"
    train.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "messages": [{"role": "user", "content": u}]}) + "\n"
            for i, (u, _, _) in enumerate(pairs)
        )
    )
    _kdeval(
        "distill", "--method", "seqkd", "--teacher", str(teacher), "--student", str(student),
        "--train", str(train), "--out", str(out / "student"), "--teacher-max-tokens", "160",
        "--epochs", "40", "--lr", "3e-3", "--batch-size", "8", "--grad-accum", "1", "--max-len", "256",
        "--checkpoint-every", "0",
    )  # fmt: skip
    _kdeval(
        "compare", "--teacher", str(teacher), "--distilled", str(out / "student"), "--task", "math_synth",
        "--limit", "16", "--no-efficiency", "--out", str(out / "compare"), quiet=True,
    )  # fmt: skip
    report = (out / "compare" / "report.md").read_text()
    start = report.index("## Answers and thinking")
    print(report[start : report.index("\n## ", start)].strip())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/thinking_student"))
