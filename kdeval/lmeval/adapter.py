"""One lm-eval task presented as a kdeval Task: its documents are the examples, its Instances
become kdeval requests, and each document is scored by lm-eval's own filters and process_results.

So the runner, store (keys, resume), aggregate, report, gate and leaderboard work on it unchanged.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.config import digest
from kdeval.errors import UserError
from kdeval.lmeval import metrics
from kdeval.lmeval.build import quiet
from kdeval.tasks import ChoiceRequest, Example, GenerateRequest, Message, Output, Request, Scored, Task

if TYPE_CHECKING:
    from kdeval.config import LmEvalSpec

#: lm-eval renders chat prompts with the model's template; kdeval renders them per model instead,
#: so the chat history is captured here and sent as messages (kdeval.backends.prompting).
_CHAT = "\x00kdeval-chat\x00"


def _capture_chat(history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    return _CHAT + json.dumps(history)


def _messages(context: str, task: str) -> tuple[Message, ...] | None:
    """The chat history of a captured context; None for a plain-text context."""
    if not context.startswith(_CHAT):
        return None
    history = json.loads(context[len(_CHAT) :])
    if history and history[-1]["role"] == "assistant":
        raise UserError(
            f"lm-eval task '{task}': a chat prompt ending in an assistant prefix (gen_prefix) "
            "is not supported",
            fix="run it without --apply-chat-template",
        )
    return tuple(Message(m["role"], m["content"]) for m in history)


class LmEvalTask(Task):
    family = "lm-eval"
    offline = True

    def __init__(self, name: str, task: Any, spec: LmEvalSpec, limit: int | None = None) -> None:
        self.name = name
        self._limit = limit
        self._task = task
        self._spec = spec
        output = task.OUTPUT_TYPE
        self.task_type = "generate" if output == "generate_until" else "multiple_choice"
        config = task.dump_config()
        # lm-eval's version and its full config (prompt, few-shot, filters, metrics) enter comparability
        options = spec.model_dump(exclude={"tasks", "include"})  # few-shot, chat, system instruction
        self.version = f"{task.VERSION}+{digest([_stable(config), options])[:12]}"
        self.metrics = tuple(self._metric_names())
        self.primary_metric = self.metrics[0]
        self.description = f"lm-eval task {name} ({output})"
        self.data_source = (
            f"lm-eval: {config.get('dataset_path', '')} {config.get('dataset_name') or ''}".strip()
        )
        self._docs: dict[str, tuple[dict[str, Any], list[Any]]] = {}

    def _metric_names(self) -> list[str]:
        filters = [f.name for f in getattr(self._task, "_filters", [])] or ["none"]
        names = []
        for metric, fn in self._task.aggregation().items():
            for key in filters:
                name = f"{metric},{key}"
                agg = getattr(fn, "__name__", str(fn))
                if agg != metrics.aggregation_of(name) or not metrics.supported(agg):
                    raise UserError(
                        f"lm-eval task '{self.name}': metric {metric} aggregates with '{agg}', which kdeval "
                        "cannot compute from per-document rows",
                        fix="use tasks whose metrics are means, perplexities or bits per byte",
                    )
                names.append(name)
        if not names:
            raise UserError(f"lm-eval task '{self.name}' defines no metric", fix="add a metric_list to it")
        return names

    def build(self, limit: int | None) -> list[Example]:
        """lm-eval's Instances for the first `limit` documents, grouped per document."""
        try:
            with quiet():
                self._build_requests(limit)
        except Exception as exc:
            raise UserError(
                f"lm-eval task '{self.name}': building its requests failed: {type(exc).__name__}: {exc}",
                fix="check the task's YAML and its data",
            ) from None
        return self._examples()

    def _build_requests(self, limit: int | None) -> None:
        spec = self._spec
        chat = spec.apply_chat_template
        self._task.build_all_requests(
            limit=limit,
            rank=0,
            world_size=1,
            cache_requests=False,
            rewrite_requests_cache=False,
            system_instruction=spec.system_instruction,
            apply_chat_template=chat,
            fewshot_as_multiturn=spec.fewshot_as_multiturn,
            chat_template=_capture_chat if chat else None,
            tokenizer_name="kdeval" if chat else "",
        )

    def _examples(self) -> list[Example]:
        by_doc: dict[int, list[Any]] = defaultdict(list)
        for inst in self._task.instances:
            by_doc[inst.doc_id].append(inst)
        examples = []
        for doc_id in sorted(by_doc):
            insts = sorted(by_doc[doc_id], key=lambda i: i.idx)
            if any(i.repeats != 1 for i in insts):
                raise UserError(
                    f"lm-eval task '{self.name}' repeats each request (repeats > 1)",
                    fix="use kdeval's --samples N with --temperature instead",
                )
            key = str(doc_id)
            self._docs[key] = (insts[0].doc, insts)
            examples.append(Example(key, {"doc": insts[0].doc, "args": [list(i.args) for i in insts]}))
        return examples

    def load(self, path: Path | None) -> list[Example]:
        return self.build(self._limit)

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        _, insts = self._docs[example.id]
        kind = insts[0].request_type
        if kind == "generate_until":
            context, gen = insts[0].args
            until = gen.get("until") or []
            stop = (until,) if isinstance(until, str) else tuple(until)
            messages = _messages(context, self.name)
            max_tokens = int(gen.get("max_gen_toks", 256))
            if messages is not None:
                return GenerateRequest(messages, max_tokens, stop)
            return GenerateRequest((), max_tokens, stop, prompt=context)
        if kind == "loglikelihood_rolling":
            return ChoiceRequest((), tuple(i.args[0] for i in insts), rolling=True)
        contexts = [i.args[0] for i in insts]
        choices = tuple(i.args[1] for i in insts)
        messages = _messages(contexts[0], self.name)
        if messages is None:
            return ChoiceRequest((), choices, contexts=tuple(contexts))
        if len(set(contexts)) > 1:
            raise UserError(
                f"lm-eval task '{self.name}': choices with their own chat prompts are not supported",
                fix="run it without --apply-chat-template",
            )
        return ChoiceRequest(messages, choices)

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        doc, insts = self._docs[example.id]
        out = outputs[0]
        kind = insts[0].request_type
        for k, inst in enumerate(insts):
            inst.resps = [_response(kind, out, k)]
            inst.filtered_resps = {}
        for ensemble in getattr(self._task, "_filters", []):
            ensemble.apply(insts)
        stats: dict[str, list[float]] = {}
        for key in insts[0].filtered_resps or {"none": None}:
            values = self._task.process_results(doc, [i.filtered_resps.get(key, i.resps[0]) for i in insts])
            for metric, value in values.items():
                name = f"{metric},{key}"
                if name in self.metrics:
                    stats[name] = metrics.row(name, value)
        return Scored(_answer(kind, out, insts), _references(self._task, doc), stats)


def _stable(config: dict[str, Any]) -> Any:
    """The config as JSON, a function by its name (its repr holds an address that changes per run)."""
    return json.loads(
        json.dumps(config, sort_keys=True, default=lambda o: getattr(o, "__qualname__", repr(o)))
    )


def _response(kind: str, out: Output, k: int) -> Any:
    """What lm-eval's model would have returned for the k-th Instance of a document."""
    if kind == "generate_until":
        return out.text
    if kind == "loglikelihood_rolling":
        return out.choice_logprobs[k]
    greedy = out.choice_greedy[k] if out.choice_greedy else False
    return (out.choice_logprobs[k], greedy)


def _answer(kind: str, out: Output, insts: list[Any]) -> str:
    """The model's answer, for agreement: the first filter's response, or the likeliest choice."""
    if kind == "generate_until":
        first = next(iter(insts[0].filtered_resps.values()), out.text)
        return str(first)
    if kind == "loglikelihood_rolling":
        return ""
    return str(out.choice)


def _references(task: Any, doc: dict[str, Any]) -> list[str]:
    try:
        return [str(task.doc_to_target(doc))]
    except Exception:  # a target lm-eval computes only inside process_results
        return []


def lmeval_tasks(spec: LmEvalSpec, limit: int | None) -> list[LmEvalTask]:
    from kdeval.lmeval.build import build_tasks

    return [LmEvalTask(name, task, spec, limit) for name, task in build_tasks(spec).items()]
