"""LoRA students through peft: wrap the student, check the target modules, merge for the output.

The trainer optimizes the adapter only; OUT is still a plain Hugging Face model directory (the
adapter merged into the weights by peft's `merge_and_unload`), so compare, vLLM and transformers
load it as any other model. `--save-adapter` also keeps the adapter in OUT/adapter.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdeval.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from kdeval.distill.config import DistillConfig

ADAPTER = "adapter"


def adaptable_names(model: torch.nn.Module) -> list[str]:
    """Last name parts of the modules LoRA can adapt (linear and embedding layers), sorted."""
    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d)
    found = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name and isinstance(m, kinds)}
    return sorted(found)


def check_targets(model: torch.nn.Module, targets: list[str], where: str) -> None:
    """Each target must name a module of the model; a typo is one line with the close names."""
    names = adaptable_names(model)
    full = {name for name, _ in model.named_modules()}
    for t in targets:
        if t in names or t in full:
            continue
        close = difflib.get_close_matches(t, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(
            f"LoRA target module '{t}' is not in the model",
            where=where,
            fix=f"{hint}its layers are named {', '.join(names)}",
        )


def check_config_targets(cfg: DistillConfig) -> None:
    """`check_targets` on the student's architecture built on the meta device (no weights load):
    the check a multi-process launch runs once, before it starts the processes."""
    if cfg.lora_target is None:
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(cfg.student, trust_remote_code=cfg.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
    check_targets(model, cfg.lora_target, cfg.student)


def apply_lora(model: PreTrainedModel, cfg: DistillConfig) -> Any:
    """The student with a fresh LoRA adapter (seeded by cfg.seed, so every process starts alike)."""
    from peft import LoraConfig, get_peft_model

    assert cfg.lora_r is not None
    if cfg.lora_target is not None:
        check_targets(model, cfg.lora_target, cfg.student)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha if cfg.lora_alpha is not None else 2 * cfg.lora_r,
        target_modules=cfg.lora_target,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.seed)
    try:
        wrapped = get_peft_model(model, lora)
    except ValueError as exc:  # peft knows no default targets for this model type
        raise UserError(
            f"LoRA cannot be set up: {str(exc).splitlines()[0]}",
            where=cfg.student,
            fix=f"name the modules with --lora-target (layers: {', '.join(adaptable_names(model))})",
        ) from None
    _check_head_untouched(model, cfg.student)
    return wrapped


def _check_head_untouched(model: PreTrainedModel, where: str) -> None:
    """The chunked loss projects with the output layer's weight; LoRA on it (or on embeddings tied
    to it) would be skipped in training yet merged into OUT, so it is refused."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head is not None and getattr(head, "weight", None) is getattr(emb, "weight", None)
    if hasattr(head, "lora_A") or (tied and hasattr(emb, "lora_embedding_A")):
        raise UserError(
            "LoRA on the output layer (or on input embeddings tied to it) is not supported",
            where=where,
            fix="target the attention and MLP projections only (e.g. --lora-target q_proj,v_proj)",
        )


def is_lora(model: Any) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def inner_model(model: Any) -> PreTrainedModel:
    """The Hugging Face model that computes (LoRA layers included) under a peft wrapper."""
    inner: PreTrainedModel = model.get_base_model() if is_lora(model) else model
    return inner


def save_student(model: Any, out: Path, save_adapter: bool) -> None:
    """OUT as a plain model directory; a LoRA student is merged (and its adapter kept if asked)."""
    if is_lora(model):
        if save_adapter:
            model.save_pretrained(out / ADAPTER)
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
