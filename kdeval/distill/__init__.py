"""Distillation: make the student that `compare` judges.

    from kdeval.distill import load_config, train
    cfg = load_config(Path("distill.yaml"), {"out": "models/distilled"})
    result = train(cfg, resume=False)        # OUT is a Hugging Face model directory

Methods: sft (gold responses), seqkd (teacher-written responses, then SFT), and the token-level
kd, jsd, tvd, skl (see `kdeval.distill.losses`), from a teacher run alongside or a top-k cache, and
on-policy gkd (`kdeval.distill.onpolicy`: the student writes a share of the responses).
Heavy modules (torch, transformers) load only when `train` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdeval.distill.config import DistillConfig, load_config, make_config

if TYPE_CHECKING:
    from kdeval.distill.trainer import TrainResult

__all__ = ["DistillConfig", "TrainResult", "is_complete", "load_config", "make_config", "train"]


def train(
    cfg: DistillConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Any = None,
    clock: Any = None,
) -> TrainResult:
    """Run (or resume) one training job; see `kdeval.distill.trainer.train`."""
    from kdeval.distill.trainer import train as _train

    timed = {"clock": clock} if clock is not None else {}
    return _train(cfg, resume=resume, progress=progress, on_step=on_step, **timed)


def is_complete(cfg: DistillConfig) -> bool:
    """True when OUT holds a finished run of exactly this config (callers may skip training)."""
    from kdeval.distill.config import CONFIG_FILE
    from kdeval.distill.outputs import read_summary

    saved = cfg.out_dir / CONFIG_FILE
    if read_summary(cfg.out_dir) is None or not saved.is_file():
        return False
    import yaml

    return bool(yaml.safe_load(saved.read_text()) == cfg.model_dump(mode="json"))
