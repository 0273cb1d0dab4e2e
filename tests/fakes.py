"""A toy suite and a scripted backend, for testing the runner, store and report without models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from kdeval.backends.base import Backend, ModelInfo
from kdeval.backends.registry import BackendKind, Needs, ResolvedModel
from kdeval.config import ModelSpec, RunSpec
from kdeval.efficiency.probes import Engine
from kdeval.metrics import METRICS, mean_row
from kdeval.plugins import Catalog
from kdeval.tasks import (
    ChoiceRequest,
    Example,
    GenerateRequest,
    Output,
    Request,
    Scored,
    Suite,
    Task,
    user_turn,
)
from kdeval_suites.conversation.tasks import TwoTurnTask


def fake_checkpoint(d: Path, payload: str, config: dict[str, Any] | None = None) -> str:
    """A model directory that passes kdeval.modeldir's checks but holds no weights worth loading:
    its safetensors file has no tensors, only `payload` as metadata (which makes the fingerprint,
    and which fake backends read back with `fake_payload`)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama", **(config or {})}))
    (d / "tokenizer.json").write_text("{}")
    header = json.dumps({"__metadata__": {"payload": payload}}).encode()
    (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    return str(d)


def fake_payload(d: str | Path) -> str:
    raw = (Path(d) / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return str(json.loads(raw[8 : 8 + n])["__metadata__"]["payload"])


class ToyChoice(Task):
    name, family, task_type = "toy_choice", "toy", "multiple_choice"
    metrics, primary_metric, offline = ("accuracy",), "accuracy", True

    def load(self, path: Path | None) -> list[Example]:
        return [Example(f"c{i}", {"q": f"is {i} even?", "gold": i % 2}) for i in range(20)]

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        return ChoiceRequest(user_turn(example.data["q"]), (" yes", " no"))

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        pick = outputs[0].choice
        return Scored(
            str(pick),
            [str(example.data["gold"])],
            {"accuracy": mean_row(float(pick == example.data["gold"]))},
        )


class ToyChat(Task):
    """Two turns: the second prompt carries the model's own first answer."""

    name, family, task_type = "toy_chat", "toy", "generate"
    metrics, primary_metric, offline, stages = ("chrf",), "chrf", True, 2

    def load(self, path: Path | None) -> list[Example]:
        return [Example(f"g{i}", {"q": f"say {i}", "ref": f"number {i}"}) for i in range(15)]

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        if not history:
            return GenerateRequest(user_turn(example.data["q"]), max_tokens=8)
        return GenerateRequest(user_turn(f"{example.data['q']} again after {history[0].text}"), max_tokens=8)

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        hyp = outputs[-1].text
        return Scored(hyp, [example.data["ref"]], {"chrf": METRICS["chrf"].stats(hyp, [example.data["ref"]])})


class ToyTeacherRef(TwoTurnTask):
    """Two turns scored against the teacher's answers where the data has no reference
    (`needs_teacher`, as mt_bench): every fourth example has none."""

    name, family, needs_teacher, offline, max_tokens = "toy_ref", "toy", True, True, 8

    def load(self, path: Path | None) -> list[Example]:
        def refs(i: int) -> list[list[str]]:
            return [[], []] if i % 4 == 0 else [[f"number {i}"], [f"number {i}"]]

        return [
            Example(f"r{i}", {"turns": [f"say {i}", f"repeat {i} please"], "references": refs(i)})
            for i in range(12)
        ]


def toy_catalog() -> Catalog:
    return Catalog({"toy": Suite("toy", "toy", "toy tasks for tests", [ToyChoice(), ToyChat()])})


class ScriptedBackend:
    """Answers from the model path: a 'good' model answers right, others answer wrong sometimes.
    Counts every request it serves so tests can check what was reused."""

    name = "fake"
    served: list[str] = []

    def __init__(self, path: str, fail_after: int | None = None) -> None:
        self.path = path
        self.good = "good" in path
        self.fail_after = fail_after
        self.info = ModelInfo(chat_template=False, n_params=1234, dtype="float32")

    def run(self, requests: Sequence[Request], on_done: object) -> None:
        for i, req in enumerate(requests):
            if self.fail_after is not None and len(ScriptedBackend.served) >= self.fail_after:
                raise KeyboardInterrupt  # stands in for a crash part-way through
            ScriptedBackend.served.append(self.path)
            on_done(i, self._answer(req))  # type: ignore[operator]

    def _answer(self, req: Request) -> Output:
        prompt = req.messages[-1].content
        if isinstance(req, ChoiceRequest):
            n = int(prompt.split()[1])
            right = n % 2 if (self.good or n % 3) else 1 - n % 2
            return Output(prompt=prompt, choice_logprobs=[-1.0 if j == right else -2.0 for j in range(2)])
        n = prompt.split()[1]
        if "mute" in self.path and int(n) % 3 == 0:  # a teacher that answers nothing sometimes
            return Output(prompt=prompt, text="")
        return Output(prompt=prompt, text=f"number {n}" if self.good or int(n) % 2 else "no idea")

    def close(self) -> None:
        pass


class ScriptedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flavour: str = "plain"  # changes outputs (keys the store)
    workers: int = 1  # only paces the backend (does not)


class ScriptedKind(BackendKind):
    """The scripted backend as a registered backend: what a third-party backend package writes."""

    name = "scripted"
    summary = "answers from the model path (tests)"
    Options = ScriptedOptions
    placement = frozenset({"workers"})

    def resolve(self, model: ModelSpec, run: RunSpec, needs: Needs) -> ResolvedModel:
        from kdeval.backends.local import resolve_local

        return resolve_local(self, model, run, self.check_options(model))

    def start(self, model: ResolvedModel, *, measuring: bool = False) -> Backend:
        backend: Backend = ScriptedBackend(model.path)  # type: ignore[assignment]
        return backend

    def cost_engine(self, backend: Backend) -> Engine:
        raise NotImplementedError


KIND = ScriptedKind()
