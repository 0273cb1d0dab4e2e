"""What a training run leaves next to the model: the JSONL log, the loss curve, the config, a summary.

The output folder stays a plain Hugging Face model directory (config, weights, tokenizer) that
transformers, vLLM and `kdeval compare` load as they are; these extra files do not disturb them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdeval.datafiles import write_atomic

LOG = "train_log.jsonl"
CURVE = "loss_curve.png"
SUMMARY = "distill_summary.json"


class TrainLog:
    """Append-only JSONL, one record per optimizer step (kind "train") or evaluation ("valid")."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOG

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.is_file():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:  # a line cut by kill -9
                continue

    def rewind(self, step: int) -> None:
        """Keep what happened before the checkpoint at `step`: a resumed run redoes the rest
        (its steps after `step`, and any evaluation at `step`, which follows the checkpoint)."""
        kept = [r for r in self.records() if r["step"] < step or (r["step"] == step and r["kind"] == "train")]
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def plot_curve(log: TrainLog, png: Path, title: str) -> bool:
    """Training loss per step (and validation CE per epoch); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = list(log.records())
    train = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train"]
    valid = [(r["step"], r["valid_ce"]) for r in rows if r.get("kind") == "valid"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    ce = [(r["step"], r["ce"]) for r in rows if r.get("kind") == "train"]
    if ce and any(r.get("div") for r in rows if r.get("kind") == "train"):  # CE differs from the loss
        ax.plot(*zip(*ce, strict=True), "--", label="train CE (response tokens)", linewidth=1)
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="valid CE (response tokens)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per token")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)
    return True


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    write_atomic(out / SUMMARY, json.dumps(summary, indent=1) + "\n")


def read_summary(out: Path) -> dict[str, Any] | None:
    path = out / SUMMARY
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
