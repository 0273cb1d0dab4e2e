"""Peak training memory with the teacher in training memory (dense) vs the teacher's top-k cache.

    python benchmarks/bench_teacher_cache.py [--teacher-hidden 512] [--teacher-layers 8] [--topk 20]

One KD epoch (`--method kd`, alpha 0.5, T=1) of the same small student on the same data, three
ways, each in its own process so one's peak cannot hide another's:

  dense        the teacher is loaded next to the student and run on every batch (today's default);
  cache build  the top-k cache written once (`--topk K`): the teacher runs over the data, its
               top-k log-probs go to disk shard by shard, then it is freed (plus one training step);
  from cache   training that finds the cache on disk: the teacher is never loaded, the student
               reads the cached rows (memory-mapped safetensors).

The cache can equally be filled by vLLM or a served teacher (`--teacher-backend vllm`, a URL), in
which case the build runs in another process or machine altogether. Peak memory is the process's
peak RSS (VmHWM) on CPU (glibc's mmap threshold fixed so freed memory is returned and RSS shows live
tensors, as in bench_loss_memory.py; that slows allocation, so seconds are indicative) and
torch.cuda.max_memory_allocated on a GPU. The teacher is a random-init Llama much larger than the
student, as in practice; sizes are flags.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TASKS = "nli_synth:{n},qa_synth:{n},math_synth:{n}"
VARIANTS = ("dense", "cache build", "from cache")


def rss_mib() -> float:
    """This process's peak resident memory: /proc's VmHWM (getrusage's ru_maxrss would carry the
    parent's peak across fork + exec and hide a smaller child's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(root: Path, args: argparse.Namespace) -> dict[str, str]:
    """Teacher, student (one tokenizer) and the training JSONL, built once."""
    from kdeval.distill.demo import texts
    from kdeval.distill.demo_models import build_model, build_tokenizer
    from kdeval.distill.suitedata import write_training_file
    from kdeval.plugins import load_catalog

    data = write_training_file(TASKS.format(n=args.examples), load_catalog(), root)
    tokenizer = build_tokenizer(texts(data), args.vocab)
    teacher = build_model(
        root / "teacher", tokenizer, hidden=args.teacher_hidden, layers=args.teacher_layers, seed=0
    )
    student = build_model(root / "student", tokenizer, hidden=args.student_hidden, layers=2, seed=1)
    return {"teacher": str(teacher), "student": str(student), "data": str(data), "root": str(root)}


def run(variant: str, paths: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM  # noqa: F401  (imports before the baseline)

    from kdeval.distill import make_config, train
    from kdeval.efficiency.memory import param_count

    cuda = torch.cuda.is_available()
    after_imports = rss_mib()
    values = {
        "student": paths["student"], "teacher": paths["teacher"], "train": paths["data"], "method": "kd",
        "out": str(Path(paths["root"]) / f"out-{variant.replace(' ', '-')}-{time.time_ns()}"), "lr": 1e-3,
        "batch_size": args.batch_size, "grad_accum": 1, "epochs": 1, "max_len": args.max_len,
        "checkpoint_every": 0, "checkpoint_minutes": 0, "seed": 0,
    }  # fmt: skip
    if variant != "dense":
        values.update(topk=args.topk, topk_cache=str(Path(paths["root"]) / "teacher_topk"))
    if variant == "cache build":
        values["max_steps"] = 1
    started = time.perf_counter()
    result = train(make_config(values), progress=False)
    return {
        "loop_s": result.seconds, "total_s": time.perf_counter() - started, "tokens": result.tokens,
        "final_loss": result.final_loss, "after_imports_mib": after_imports, "peak_rss_mib": rss_mib(),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "teacher_params": param_count(Path(paths["teacher"])),
        "student_params": param_count(Path(paths["student"])),
    }  # fmt: skip


def spawn(variant: str, paths_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(HERE),
        "--worker",
        variant,
        "--paths",
        str(paths_file),
        "--topk",
        str(args.topk),
    ]
    cmd += ["--batch-size", str(args.batch_size), "--max-len", str(args.max_len)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def table(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    gpu = runs["dense"]["peak_gpu_mib"] is not None
    head = "| variant | peak RSS MiB | above imports MiB |" + (" peak GPU MiB |" if gpu else "")
    lines = [head + " loop s | tokens/s | end-to-end s | final loss |", "|---" * (8 if gpu else 7) + "|"]
    for name, r in runs.items():
        cells = [name, f"{r['peak_rss_mib']:.0f}", f"{r['peak_rss_mib'] - r['after_imports_mib']:.0f}"]
        cells += [f"{r['peak_gpu_mib']:.0f}"] if gpu else []
        cells += [
            f"{r['loop_s']:.1f}",
            f"{r['tokens'] / max(r['loop_s'], 1e-9):.0f}",
            f"{r['total_s']:.1f}",
            f"{r['final_loss']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    d, c = runs["dense"], runs["from cache"]
    above = (c["peak_rss_mib"] - c["after_imports_mib"]) / (d["peak_rss_mib"] - d["after_imports_mib"])
    ratio = f"from cache / dense: peak RSS x{c['peak_rss_mib'] / d['peak_rss_mib']:.2f}"
    ratio += f" (above imports x{above:.2f})"
    if gpu:
        ratio += f", peak GPU x{c['peak_gpu_mib'] / d['peak_gpu_mib']:.2f}"
    size = (
        f"teacher {d['teacher_params'] / 1e6:.1f}M params, student {d['student_params'] / 1e6:.1f}M, "
        f"top-k {args.topk}, batch {args.batch_size}, max_len {args.max_len}, "
        f"{d['tokens']} response tokens, 1 epoch"
    )
    return "\n".join([*lines, "", ratio + ".", size + "."])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=100, help="training examples per task (3 tasks)")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--teacher-hidden", type=int, default=512)
    p.add_argument("--teacher-layers", type=int, default=8)
    p.add_argument("--student-hidden", type=int, default=128)
    p.add_argument("--topk", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--root", type=Path, default=Path("runs/bench_teacher_cache"))
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run(args.worker, json.loads(Path(args.paths).read_text()), args)))
        return
    import shutil

    args.root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.root / "teacher_topk", ignore_errors=True)  # the build is measured, not reused
    paths_file = args.root / "paths.json"
    paths_file.write_text(json.dumps(prepare(args.root.resolve(), args)))
    runs = {}
    for variant in VARIANTS:  # the cache is built before it is trained from
        runs[variant] = spawn(variant, paths_file, args)
        print(f"{variant}: {runs[variant]}", file=sys.stderr, flush=True)
    print(table(runs, args))


if __name__ == "__main__":
    main()
