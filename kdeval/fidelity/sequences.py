"""What the student is teacher-forced on: the teacher's own outputs for the evaluation prompts.

Generation tasks: every stage's prompt (as the teacher's run rendered it) followed by the tokens
the teacher generated. Multiple-choice tasks: the context followed by the continuation the
teacher chose (the highest log-likelihood), tokenized as the log-likelihood scoring splits it.
Perplexity tasks (lm-eval's loglikelihood_rolling): the document itself, in the same rolling
windows its log-likelihood was scored in.
"""

from __future__ import annotations

from collections.abc import Sequence

from kdeval.backends.prompting import PromptCodec
from kdeval.distill.data import TokenizedExample
from kdeval.tasks import ChoiceRequest, Example, Output, Task


def example_sequences(
    task: Task, example: Example, outputs: Sequence[Output], codec: PromptCodec, max_len: int
) -> list[TokenizedExample]:
    """The teacher-forced sequences of one example (one per stage or window; none when it gave
    nothing); `max_len` is the shorter of the two models' windows."""
    if task.task_type == "multiple_choice":
        return _chosen(task, example, outputs, codec, max_len)
    seqs = []
    for out in outputs:
        prompt = codec.encode_text(out.prompt)
        answer = list(out.token_ids) or _text_ids(codec, out.text)
        if prompt and answer:
            seqs.append(TokenizedExample(tuple(prompt + answer), len(prompt)))
    return seqs


def _chosen(
    task: Task, example: Example, outputs: Sequence[Output], codec: PromptCodec, max_len: int
) -> list[TokenizedExample]:
    if not outputs or not outputs[0].choice_logprobs:
        return []
    req = task.request(example, [])
    if not isinstance(req, ChoiceRequest):
        return []
    if req.rolling:  # one text, no choice: teacher-forced on the document, window by window
        units = codec.choice_units(req, max_len)
        return [TokenizedExample(tuple(ctx + cont), len(ctx)) for _, ctx, cont in units if cont]
    ctx, cont = codec.encode_choices(req)[outputs[0].choice]
    return [TokenizedExample(tuple(ctx + cont), len(ctx))]


def _text_ids(codec: PromptCodec, text: str) -> list[int]:
    """A server that returned text but no token ids (an OpenAI endpoint): the text, tokenized."""
    return list(codec.tokenizer.encode(text, add_special_tokens=False)) if text else []
