"""Loading teacher and student, the vocabulary guard, and the model's body / output layer split.

The loss needs hidden states once and the output layer chunk by chunk, so a model is used as
`hidden_states(model, batch)` + `output_head(model, vocab)`. `check_head` verifies once that this
split reproduces the model's own logits (a model with logit soft-capping or scaling would not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from kdeval.errors import UserError
from kdeval.modeldir import check_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kdeval.distill.data import Batch
    from kdeval.distill.losses import HeadFn


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    path: str,
    *,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
) -> PreTrainedModel:
    """A causal LM, float32 by default (a student's master weights and AdamW state), on the GPU
    when there is one; a teacher passes `teacher_dtype`'s choice."""
    from transformers import AutoModelForCausalLM

    check_model("model", path, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as exc:  # missing files, or a hub id with no network
        raise _load_error(path, exc) from None
    moved: PreTrainedModel = cast(Any, model).to(device or default_device())  # HF types .to() oddly
    return moved


def teacher_dtype(precision: str) -> torch.dtype | str:
    """The teacher only infers: in the student's half precision, or its checkpoint's dtype with fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, "auto")


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    check_model("model", path, trust_remote_code=trust_remote_code, weights=False)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise _load_error(path, exc) from None


def _load_error(path: str, exc: OSError) -> UserError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return UserError(
        f"cannot load the model: {first}", where=path, fix="check the path or hub id (and network)"
    )


def vocab_size(
    student_tok: PreTrainedTokenizerBase,
    student: PreTrainedModel,
    teacher_tok: PreTrainedTokenizerBase | None = None,
    teacher: PreTrainedModel | None = None,
    teacher_path: str = "teacher",
) -> int:
    """The real vocabulary size both output layers are trimmed to.

    Checkpoints often pad their embedding matrix (to a multiple of 64 or 128), so teacher and
    student logits may differ in width while meaning the same tokens: the extra rows are cut.
    Different tokenizers are a real mismatch: token-level losses would compare unrelated tokens.
    """
    n = len(student_tok)
    if teacher_tok is not None and teacher_tok.get_vocab() != student_tok.get_vocab():
        raise UserError(
            f"teacher and student tokenizers differ ({len(teacher_tok)} vs {n} tokens)",
            where=teacher_path,
            fix="token-level methods (kd, jsd, tvd, skl) need one tokenizer; use --method seqkd instead",
        )
    for name, model in (("student", student), ("teacher", teacher)):
        if model is not None and head_rows(model) < n:
            raise UserError(
                f"the {name}'s output layer has {head_rows(model)} rows but its tokenizer has {n} tokens",
                where=str(getattr(model, "name_or_path", name)),
                fix="resize the model's embeddings to the tokenizer (model.resize_token_embeddings)",
            )
    return n


def head_rows(model: PreTrainedModel) -> int:
    return int(_head_module(model).weight.shape[0])


def _head_module(model: PreTrainedModel) -> Any:
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise UserError(f"model {model.name_or_path} has no output layer", fix="pass a causal language model")
    return head


def output_head(model: PreTrainedModel, vocab: int) -> HeadFn:
    """Hidden states -> logits over the first `vocab` tokens (padded rows cut off)."""
    head = _head_module(model)

    def project(h: Tensor) -> Tensor:
        bias = head.bias[:vocab] if getattr(head, "bias", None) is not None else None
        return F.linear(h, head.weight[:vocab], bias)

    return project


def hidden_states(model: PreTrainedModel, batch: Batch) -> Tensor:
    """Last hidden states [B, L, H] from the model body (the part before the output layer)."""
    batch = batch.to(model.device)
    out = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    return out[0] if isinstance(out, tuple) else out.last_hidden_state


def check_head(model: PreTrainedModel, batch: Batch, vocab: int) -> None:
    """Fail early when body + plain projection does not reproduce the model's logits."""
    batch = batch.to(model.device)
    with torch.no_grad():
        ids = batch.input_ids[:1, :16]
        mask = batch.attention_mask[:1, :16]
        want = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[..., :vocab].float()
        small = type(batch)(ids, mask, batch.labels[:1, :16])
        got = output_head(model, vocab)(hidden_states(model, small)).float()
    if not torch.allclose(want, got, rtol=1e-3, atol=1e-3):
        raise UserError(
            f"model {model.name_or_path}: its logits are not a plain projection of its hidden states "
            "(e.g. logit soft-capping), which the chunked loss assumes",
            fix="use --method sft or seqkd for this model",
        )
