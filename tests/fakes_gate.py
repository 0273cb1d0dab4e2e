"""A toy suite big enough for significance tests, and a backend whose error rate is set by its
"checkpoint", for planting regressions in gate and leaderboard tests (no models).

A fake checkpoint is a directory whose weights file holds JSON {"wrong": rate, "seed": s} (as its
safetensors metadata, tests.fakes.fake_checkpoint); the
backend answers an example wrongly when a hash of (seed, example id) falls below `rate`, so the
same checkpoint always gives the same answers and two seeds give independent mistakes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from kdeval.backends.base import ModelInfo
from kdeval.compare import compare
from kdeval.config import ModelSpec, RunSpec
from kdeval.metrics import METRICS
from kdeval.plugins import Catalog
from kdeval.results import RunResult
from kdeval.tasks import Example, GenerateRequest, Output, Request, Scored, Suite, Task, user_turn
from tests.fakes import fake_checkpoint, fake_payload

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


class _CopyTask(Task):
    """The prompt carries the reference; a right model copies it, a wrong one garbles it."""

    task_type, offline = "generate", True
    count = 0

    def load(self, path: Path | None) -> list[Example]:
        return [Example(f"{self.name}-{i}", {"ref": self.reference(i)}) for i in range(self.count)]

    def reference(self, i: int) -> str:
        return " ".join(WORDS[(i * k + k) % len(WORDS)] for k in range(1, 6))

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        return GenerateRequest(user_turn(f"[{example.id}] copy: {example.data['ref']}"), max_tokens=16)

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        hyp, ref = outputs[0].text, example.data["ref"]
        return Scored(hyp, [ref], {m: METRICS[m].stats(hyp, [ref]) for m in self.metrics})


class GateQA(_CopyTask):
    name, family, metrics, primary_metric, count = "gate_qa", "qa", ("exact_match", "f1"), "f1", 300


class GateMath(_CopyTask):
    name, family, metrics, primary_metric, count = "gate_math", "math", ("accuracy",), "accuracy", 400

    def reference(self, i: int) -> str:
        return str(i * 7 % 97)


class GateChat(_CopyTask):
    name, family, metrics, primary_metric, count = "gate_chat", "chat", ("chrf", "bleu"), "chrf", 150


def gate_catalog() -> Catalog:
    return Catalog(
        {"gate": Suite("gate", "gate", "toy tasks for gate tests", [GateQA(), GateMath(), GateChat()])}
    )


class RateBackend:
    """Answers by copying the reference from the prompt, wrongly on a fixed share of examples."""

    name = "fake"

    def __init__(self, path: str) -> None:
        spec = json.loads(fake_payload(path))
        self.wrong, self.seed = float(spec["wrong"]), int(spec.get("seed", 0))
        self.info = ModelInfo(chat_template=False, n_params=int(spec.get("n_params", 1000)), dtype="float32")

    def run(self, requests: Sequence[Request], on_done: object) -> None:
        for i, req in enumerate(requests):
            on_done(i, self._answer(req.messages[-1].content))  # type: ignore[operator]

    def _answer(self, prompt: str) -> Output:
        m = re.match(r"\[(?P<id>[^\]]+)\] copy: (?P<ref>.*)$", prompt)
        assert m is not None, prompt
        u = int(hashlib.sha256(f"{self.seed}:{m['id']}".encode()).hexdigest()[:8], 16) / 16**8
        ref = m["ref"]
        # wrong: keep the first word (partial F1/chrF credit) and garble the rest
        text = ref if u >= self.wrong else f"{ref.split()[0]} zulu" if " " in ref else f"{ref}9"
        return Output(prompt=prompt, text=text)

    def close(self) -> None:
        pass


def checkpoint(root: Path, name: str, wrong: float, seed: int = 0, n_params: int = 1000) -> str:
    """A fake checkpoint directory (its bytes decide the fingerprint, so each behaves apart)."""
    return fake_checkpoint(
        root / "ckpt" / name, json.dumps({"wrong": wrong, "seed": seed, "n_params": n_params})
    )


def run_compare(out: Path, models: dict[str, str], **settings: object) -> RunResult:
    """`kdeval compare` on the gate suite: models maps role -> checkpoint directory."""
    specs = [ModelSpec(name=role, path=path, role=role) for role, path in models.items()]  # type: ignore[arg-type]
    spec = RunSpec(models=specs, out=out, **settings)  # type: ignore[arg-type]
    return compare(
        spec,
        gate_catalog(),
        argv=["kdeval", "compare", "--out", str(out)],
        log=lambda m: None,
        make_backend=lambda s, m: RateBackend(m.path),
    )
