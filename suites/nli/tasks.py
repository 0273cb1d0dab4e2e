"""NLI tasks: three-way entailment scored by the log-likelihood of " yes" / " maybe" / " no".

One prompt and one scoring rule for every source (our synthetic set, ANLI, SNLI, MultiNLI), so
their numbers differ only by the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdeval.datafiles import id_of, read_csv, read_jsonl, require
from kdeval.errors import UserError
from kdeval.metrics import mean_row
from kdeval.tasks import ChoiceRequest, Example, Message, Output, Request, Scored, Task, user_turn
from kdeval_suites.common import data_dir, load_records, need_file, require_str, unique_examples

#: Labels in choice order; CHOICES[i] is the answer word for LABELS[i].
LABELS = ("entailment", "neutral", "contradiction")
CHOICES = (" yes", " maybe", " no")

PROMPT = (
    "Premise: {premise}\nHypothesis: {hypothesis}\n"
    "Does the premise entail the hypothesis? Answer yes, maybe or no.\nAnswer:"
)


class NliTask(Task):
    """Request and scoring shared by all NLI sources; subclasses only load."""

    family = "nli"
    task_type = "multiple_choice"
    metrics = ("accuracy",)
    primary_metric = "accuracy"

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        text = PROMPT.format(premise=example.data["premise"], hypothesis=example.data["hypothesis"])
        return ChoiceRequest(messages=user_turn(text), choices=CHOICES)

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        answer = LABELS[outputs[0].choice]
        gold = example.data["label"]
        return Scored(answer=answer, references=[gold], stats={"accuracy": mean_row(float(answer == gold))})

    def training_pair(self, example: Example, stage: int = 0) -> tuple[tuple[Message, ...], str]:
        # The gold choice's continuation: the student learns the very string whose likelihood is scored.
        label = example.data["label"]
        return self.request(example, []).messages, CHOICES[LABELS.index(label)]


def _pair(premise: str, hypothesis: str, label: str) -> dict[str, Any]:
    return {"premise": premise, "hypothesis": hypothesis, "label": label}


def _label(value: str, known: dict[str, str], field: str, where: str) -> str:
    """Map a source's label spelling to ours; anything else is a user error, never a silent skip."""
    if value not in known:
        raise UserError(
            f"unknown {field} '{value}' (expected one of: {', '.join(known)})",
            where=where,
            fix="check that the file has the expected format for this task",
        )
    return known[value]


class NliSynth(NliTask):
    name = "nli_synth"
    description = "Synthetic 3-way entailment from templates: hypernyms, negation, unrelated facts."
    data_source = "shipped: suites/nli/data/test.jsonl (python -m kdeval_suites.nli.make_data)"
    offline = True
    train_path = data_dir(__file__) / "train.jsonl"

    def load(self, path: Path | None) -> list[Example]:
        def parse(obj: dict[str, Any], where: str) -> dict[str, Any]:
            label = _label(require_str(obj, "label", where), {x: x for x in LABELS}, "label", where)
            return _pair(require_str(obj, "premise", where), require_str(obj, "hypothesis", where), label)

        return load_records(
            path or data_dir(__file__) / "test.jsonl", ["premise", "hypothesis", "label"], parse
        )


class Anli(NliTask):
    name = "anli"
    description = "Adversarial NLI (Nie et al., 2020), dev set of one round."
    data_source = (
        "ANLI analysis CSV (columns context, statement, gold_label e/n/c, uid), e.g. "
        "ANLI_analysis_r1_dev.csv from github.com/facebookresearch/anli anlizinganli/anli_annot_v0.2"
    )
    url = (
        "https://raw.githubusercontent.com/facebookresearch/anli/b5ce27af54a53bd495af7260fdc485000eed15f8/"
        "anlizinganli/anli_annot_v0.2/ANLI_analysis_r1_dev.csv"
    )
    _GOLD = {"e": "entailment", "n": "neutral", "c": "contradiction"}

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        located = []
        for lineno, row in read_csv(path):
            where = f"{path}:{lineno}"
            require(row, ["uid", "context", "statement", "gold_label"], where)
            label = _label(row["gold_label"], self._GOLD, "gold_label", where)
            pair = _pair(require_str(row, "context", where), require_str(row, "statement", where), label)
            located.append((Example(id_of(row["uid"], where, "uid"), pair), where))
        return unique_examples(located)


class SnliFormat(NliTask):
    """The SNLI 1.0 / MultiNLI 1.0 JSONL layout, read as the official readers do."""

    _GOLD = {x: x for x in LABELS}

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        located = []
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            require(obj, ["sentence1", "sentence2", "gold_label"], where)
            if obj["gold_label"] == "-":  # no annotator majority: excluded from the official splits
                continue
            label = _label(require_str(obj, "gold_label", where), self._GOLD, "gold_label", where)
            # pairID is the official id; the line number keeps ids stable for files without it.
            ex_id = str(obj.get("pairID") or f"L{lineno}")
            pair = _pair(require_str(obj, "sentence1", where), require_str(obj, "sentence2", where), label)
            located.append((Example(ex_id, pair), where))
        return unique_examples(located)


class Snli(SnliFormat):
    name = "snli"
    description = "Stanford NLI 1.0 (Bowman et al., 2015); records with gold_label '-' are skipped."
    data_source = (
        "SNLI 1.0 JSONL (sentence1, sentence2, gold_label), e.g. snli_1.0_test.jsonl "
        "from https://nlp.stanford.edu/projects/snli/snli_1.0.zip"
    )


class Mnli(SnliFormat):
    name = "mnli"
    description = "MultiNLI 1.0 (Williams et al., 2018); records with gold_label '-' are skipped."
    data_source = (
        "MultiNLI 1.0 JSONL (sentence1, sentence2, gold_label), e.g. multinli_1.0_dev_matched.jsonl "
        "from https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip"
    )
