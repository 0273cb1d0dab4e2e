"""Trainer speed and memory: one KD epoch, kdeval vs TRL's GKDTrainer, same models and data,
in fp32 and bf16, one process and two (accelerate's launcher, gloo on CPU).

    python benchmarks/bench_trainer_vs_trl.py [--examples 600] [--batch-size 8] [--repeats 2] \
        [--columns fp32:1,bf16:1,fp32:2,bf16:2]

Both train the same tiny student from the same tiny teacher (the demo's model builder, with a chat
template so TRL's ChatML collator can read the data) on the same prompt/response pairs from the
demo's training splits, one epoch, the same batch size, learning rate and maximum length, one
CPU thread each. The loss is the same: forward KL to the teacher on the response tokens only
(kdeval `--method jsd --beta 0 --alpha 0`; GKD with beta=0, lmbda=0 so no on-policy generation,
seq_kd off). Each run is its own process, so peak memory (max RSS) is that trainer's alone; the
RSS after imports is reported too, since both load torch and transformers first.

Reported: loop seconds (kdeval's TrainResult.seconds; TRL's train_runtime), tokens/s over the
response tokens each trainer trained on, peak RSS, and the kdeval / TRL ratios. The loss column
is what each reports: kdeval the last step's loss, TRL the mean over the epoch.

Columns: precision (fp32, or bf16 autocast: kdeval `--precision bf16`, TRL `bf16=True`) x processes.
With two processes both keep the global batch: kdeval splits `--batch-size` across the processes,
TRL gets a per-device batch of half; peak memory is then the sum of the processes' peak RSS.
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


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def prepare(root: Path, per_task: int) -> dict[str, str]:
    """Teacher, student (shared tokenizer with a chat template) and the JSONL, built once."""
    from kdeval.distill.demo import texts
    from kdeval.distill.demo_models import build_model, build_tokenizer
    from kdeval.distill.suitedata import write_training_file
    from kdeval.plugins import load_catalog
    from kdeval.tinymodels import CHAT_TEMPLATE

    data = write_training_file(TASKS.format(n=per_task), load_catalog(), root)
    tokenizer = build_tokenizer(texts(data), 2000)
    tokenizer.chat_template = CHAT_TEMPLATE
    teacher = build_model(root / "teacher", tokenizer, hidden=128, layers=2, seed=0)
    student = build_model(root / "student", tokenizer, hidden=64, layers=2, seed=1)
    return {"teacher": str(teacher), "student": str(student), "data": str(data), "root": str(root)}


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def run_kdeval(paths: dict[str, str], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (imported as TRL's are)

    from kdeval.distill import make_config, train

    torch.set_num_threads(1)
    after_imports = rss_mib()
    cfg = make_config(
        {
            "student": paths["student"], "teacher": paths["teacher"], "train": paths["data"],
            "out": str(out), "method": "jsd", "beta": 0.0, "alpha": 0.0, "lr": 1e-3,
            "batch_size": args.batch_size, "grad_accum": 1, "epochs": 1, "max_len": args.max_len,
            "checkpoint_every": 0, "checkpoint_minutes": 0, "seed": 0, "precision": args.precision,
        }
    )  # fmt: skip
    started = time.perf_counter()
    result = train(cfg, progress=False)
    total = time.perf_counter() - started
    return {
        "loop_s": result.seconds, "total_s": total, "tokens": result.tokens,
        "final_loss": result.final_loss, "rss_after_imports_mib": after_imports, "peak_rss_mib": rss_mib(),
    }  # fmt: skip


def run_trl(paths: dict[str, str], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.set_num_threads(1)
    after_imports = rss_mib()
    started = time.perf_counter()
    rows = []
    for line in Path(paths["data"]).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        rows.append({"messages": [*rec["messages"], {"role": "assistant", "content": rec["response"]}]})
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(paths["student"])
    per_device = max(1, args.batch_size // args.procs)  # the same global batch as kdeval's
    config = GKDConfig(
        output_dir=str(out), per_device_train_batch_size=per_device, gradient_accumulation_steps=1,
        num_train_epochs=1, learning_rate=1e-3, lr_scheduler_type="linear", max_length=args.max_len,
        beta=0.0, lmbda=0.0, seq_kd=False, temperature=1.0, use_cpu=True, report_to="none",
        save_strategy="no", logging_steps=10_000, dataloader_num_workers=0, seed=0,
        bf16=args.precision == "bf16", fp16=False,
    )  # fmt: skip
    trainer = GKDTrainer(
        model=AutoModelForCausalLM.from_pretrained(paths["student"]),
        teacher_model=AutoModelForCausalLM.from_pretrained(paths["teacher"]),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    output = trainer.train()
    total = time.perf_counter() - started
    collator = trainer.data_collator
    tokens = sum(
        int((collator(rows[i : i + 64])["labels"][:, 1:] != -100).sum()) for i in range(0, len(rows), 64)
    )
    return {
        "loop_s": output.metrics["train_runtime"], "total_s": total, "tokens": tokens,
        "final_loss": output.training_loss, "rss_after_imports_mib": after_imports, "peak_rss_mib": rss_mib(),
    }  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    paths = json.loads(Path(args.paths).read_text())
    out = Path(paths["root"]) / f"out-{args.worker}-{args.precision}-{args.procs}-{args.stamp}"
    run = run_kdeval if args.worker == "kdeval" else run_trl
    result = json.dumps({**run(paths, args, out), "rank": rank()})
    # one file per process: the processes' stdout lines may interleave
    Path(paths["root"], f"result-{args.stamp}-{rank()}.json").write_text(result)


def spawn(
    name: str, paths_file: Path, args: argparse.Namespace, precision: str, procs: int
) -> dict[str, Any]:
    """One run in its own process(es); the main process's figures with the processes' RSS summed."""
    stamp = str(time.time_ns())
    cmd = [
        sys.executable,
        str(HERE),
        "--worker",
        name,
        "--paths",
        str(paths_file),
        "--stamp",
        stamp,
    ]
    cmd += ["--batch-size", str(args.batch_size), "--max-len", str(args.max_len)]
    cmd += ["--precision", precision, "--procs", str(procs)]
    if procs > 1:
        mixed = "no" if precision == "fp32" else precision
        launch = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(procs),
        ]
        cmd = [*launch, "--num_machines", "1", "--mixed_precision", mixed, "--dynamo_backend", "no", *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    root = Path(json.loads(paths_file.read_text())["root"])
    found = [json.loads(f.read_text()) for f in sorted(root.glob(f"result-{stamp}-*.json"))]
    if proc.returncode != 0 or len(found) != procs:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    main_rank: dict[str, Any] = next(r for r in found if r["rank"] == 0)
    for key in ("peak_rss_mib", "rss_after_imports_mib"):
        main_rank[key] = sum(r[key] for r in found)
    return main_rank


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=1000, help="training examples per task (3 tasks)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2, help="runs per trainer, alternating; the best is kept")
    p.add_argument("--root", type=Path, default=Path("runs/bench_trainer_vs_trl"))
    p.add_argument(
        "--columns", default="fp32:1,bf16:1,fp32:2,bf16:2", help="precision:processes, comma-separated"
    )
    p.add_argument("--worker", choices=["kdeval", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--stamp", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--procs", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    args.root.mkdir(parents=True, exist_ok=True)
    paths_file = args.root / "paths.json"
    paths_file.write_text(json.dumps(prepare(args.root.resolve(), args.examples)))
    columns = [(c.split(":")[0], int(c.split(":")[1])) for c in args.columns.split(",")]
    best: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for precision, procs in columns:
        runs: dict[str, list[dict[str, Any]]] = {"kdeval": [], "trl": []}
        for _ in range(args.repeats):
            for name in runs:
                runs[name].append(spawn(name, paths_file, args, precision, procs))
                print(f"{name} {precision} x{procs}: {runs[name][-1]}", file=sys.stderr, flush=True)
        best[precision, procs] = {name: min(rs, key=lambda r: r["loop_s"]) for name, rs in runs.items()}
    print(table(best, args))


def table(best: dict[tuple[str, int], dict[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        "| precision | processes | trainer | loop s | tokens | tokens/s | end-to-end s | peak RSS MiB "
        "| RSS after imports MiB | reported loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ratios = [
        "| precision | processes | kdeval / TRL tokens/s | kdeval / TRL peak RSS "
        "| above imports MiB (kdeval vs TRL) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (precision, procs), pair in best.items():
        for name, r in pair.items():
            label = "kdeval (jsd beta=0, alpha=0)" if name == "kdeval" else "TRL GKDTrainer (beta=0, lmbda=0)"
            lines.append(
                f"| {precision} | {procs} | {label} | {r['loop_s']:.1f} | {r['tokens']} | "
                f"{r['tokens'] / r['loop_s']:.0f} | {r['total_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                f"{r['rss_after_imports_mib']:.0f} | {r['final_loss']:.4f} |"
            )
        k, t = pair["kdeval"], pair["trl"]
        speed = (k["tokens"] / k["loop_s"]) / (t["tokens"] / t["loop_s"])
        extra_k = k["peak_rss_mib"] - k["rss_after_imports_mib"]
        extra_t = t["peak_rss_mib"] - t["rss_after_imports_mib"]
        ratios.append(
            f"| {precision} | {procs} | x{speed:.2f} | x{k['peak_rss_mib'] / t['peak_rss_mib']:.2f} | "
            f"{extra_k:.0f} vs {extra_t:.0f} |"
        )
    return "\n".join(
        [
            *lines,
            "",
            *ratios,
            "",
            f"Global batch {args.batch_size}, max_len {args.max_len}, 1 epoch, 1 CPU thread per process, "
            f"best of {args.repeats} alternating runs per column; RSS summed over a column's processes.",
        ]
    )


if __name__ == "__main__":
    main()
