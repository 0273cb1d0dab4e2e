"""The same lm-eval tasks on the same model through kdeval and through lm-eval directly.

Three local lm-eval tasks (YAMLs with `dataset_path: json`): nli_synth's test set as a
multiple-choice task, a `generate_until` task with a regex filter, a perplexity task. Each side runs
end to end in a fresh process, as a user runs it (start-up, imports, task building, model load,
scoring): `kdeval compare --lm-eval-task ...` on transformers and on vLLM, and
`lm_eval.simple_evaluate(model="hf")` at its default batch size (1) and at kdeval's (16). Prints
wall times, each one's ratio to lm-eval's transformers run, and whether the scores are identical
(means exactly; perplexities within 1e-6 relative, see the README's parity note).

    python benchmarks/bench_lmeval.py [--mc 300] [--gen 60] [--ppl 60] [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lmeval_tasks import GEN, PPL, write_tasks  # noqa: E402

TASKS = ["kd_mc", "kd_gen", "kd_ppl"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

LM_EVAL = """
import json, sys
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
r = simple_evaluate(model="hf", model_args="pretrained={model}", tasks={tasks!r}, device="cpu",
                    task_manager=TaskManager(include_path={include!r}), batch_size={bs})
json.dump({{t: {{k: v for k, v in d.items() if "," in k and "stderr" not in k}}
           for t, d in r["results"].items()}}, open({out!r}, "w"))
"""


def write_bench_tasks(folder: Path, n_mc: int, n_gen: int, n_ppl: int) -> Path:
    """The test tasks, grown: nli_synth's test set as kd_mc, the questions and texts repeated."""
    write_tasks(folder)
    nli = (REPO / "suites" / "nli" / "data" / "test.jsonl").read_text().splitlines()[:n_mc]
    words = {"entailment": 0, "neutral": 1, "contradiction": 2}
    mc = []
    for line in nli:
        r = json.loads(line)
        q = f"Premise: {r['premise']} Hypothesis: {r['hypothesis']} Entailed?"
        mc.append({"question": q, "choices": [" yes", " maybe", " no"], "label": words[r["label"]]})
    gen = [{**GEN[i % len(GEN)], "question": f"{GEN[i % len(GEN)]['question']} ({i})"} for i in range(n_gen)]
    ppl = [{"text": f"{PPL[i % len(PPL)]['text']} Line {i}."} for i in range(n_ppl)]
    for name, rows in (("kd_mc", mc), ("kd_gen", gen), ("kd_ppl", ppl)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd[:6])} ...\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def kdeval_run(model: Path, tasks: Path, backend: str, out: Path) -> tuple[float, dict[str, float]]:
    cmd = [sys.executable, "-m", "kdeval.cli", "compare", "--model", f"m={model}", "--backend", backend]
    cmd += [a for t in TASKS for a in ("--lm-eval-task", t)]
    cmd += ["--lm-eval-include", str(tasks), "--no-efficiency", "--quiet", "--out", str(out)]
    wall = timed(cmd)
    scores = json.loads((out / "results.json").read_text())["scores"]
    return wall, {f"{s['task']}/{s['metric']}": s["value"] for s in scores}


def lm_eval_run(model: Path, tasks: Path, batch_size: int, out: Path) -> tuple[float, dict[str, float]]:
    code = LM_EVAL.format(model=model, tasks=TASKS, include=str(tasks), bs=batch_size, out=str(out))
    wall = timed([sys.executable, "-c", code])
    raw: dict[str, dict[str, float]] = json.loads(out.read_text())
    scale = {True: 1.0, False: 100.0}
    return wall, {
        f"{t}/{k}": v * scale[any(p in k for p in ("perplexity", "bits_per_byte"))]
        for t, d in raw.items()
        for k, v in d.items()
    }


def agreement(a: dict[str, float], b: dict[str, float]) -> str:
    """'identical' (means equal up to float rounding of the x100, perplexities within 1e-6
    relative), else the largest relative gap."""
    if a.keys() != b.keys():
        return "different metrics"

    def rel(k: str) -> float:
        return abs(a[k] - b[k]) / max(1.0, abs(b[k]))

    means = all(rel(k) <= 1e-12 for k in a if not any(p in k for p in ("perplexity", "bits_per_byte")))
    gap = max(rel(k) for k in a)
    if means and gap <= 1e-6:
        return "identical"
    return f"means {'equal' if means else 'DIFFER'}, max rel. gap {gap:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mc", type=int, default=300)
    ap.add_argument("--gen", type=int, default=60)
    ap.add_argument("--ppl", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--no-vllm", action="store_true")
    args = ap.parse_args()
    from kdeval.tinymodels import build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="bench_lmeval_"))
    shape = {"hidden": args.hidden, "layers": args.layers, "heads": args.hidden // 32}
    model = build_tiny_model(root / "model", seed=0, **shape)
    tasks = write_bench_tasks(root / "tasks", args.mc, args.gen, args.ppl)
    runs: list[tuple[str, float, dict[str, float]]] = []
    ref_wall, ref = lm_eval_run(model, tasks, 16, root / "lm16.json")
    runs.append(("lm-eval hf, batch 16 (reference)", ref_wall, ref))
    runs.append(("lm-eval hf, batch 1 (its default)", *lm_eval_run(model, tasks, 1, root / "lm1.json")))
    runs.append(("kdeval hf (batch 16)", *kdeval_run(model, tasks, "hf", root / "kd_hf")))
    if not args.no_vllm:
        runs.append(("kdeval vLLM", *kdeval_run(model, tasks, "vllm", root / "kd_vllm")))
    n = f"{args.mc} + {args.gen} + {args.ppl} documents"
    shape_text = f"tiny Llama {args.hidden} wide, {args.layers} layers"
    print(f"\nlm-eval tasks kd_mc, kd_gen, kd_ppl ({n}); {shape_text}; CPU\n")
    print("| run | wall s | × lm-eval hf (batch 16) | scores vs lm-eval |")
    print("| --- | --- | --- | --- |")
    for name, wall, scores in runs:
        print(f"| {name} | {wall:.1f} | {wall / ref_wall:.2f}× | {agreement(scores, ref)} |")
    print()
    for name, _, scores in runs:
        print(f"{name}: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(scores.items())))


if __name__ == "__main__":
    main()
