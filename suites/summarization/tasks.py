"""Summarization tasks: a document in, one sentence out, scored against every reference summary.

One prompt and one scoring rule for every source (our synthetic set, XSum, DialogSum, SciTLDR),
so their numbers differ only by the data. Each example's data is {"document", "references"}.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdeval.datafiles import id_of, read_jsonl, require
from kdeval.metrics import get_metric, normalize_text
from kdeval.tasks import Example, GenerateRequest, Message, Output, Request, Scored, Task, user_turn
from kdeval_suites.common import (
    data_dir,
    load_records,
    need_file,
    output_text,
    require_str,
    require_str_list,
    unique_examples,
)

PROMPT = "Summarize in one sentence.\n\n{document}\n\nSummary:"
STOP = ("\n",)


def _doc(document: str, references: list[str]) -> dict[str, Any]:
    return {"document": document, "references": references}


class SummarizationTask(Task):
    """Request and scoring shared by all summarization sources; subclasses only load."""

    family = "summarization"
    task_type = "generate"
    metrics = ("rouge1", "rouge2", "rougeL", "bleu", "chrf")
    primary_metric = "rougeL"
    #: Room for one sentence: public references run 20-40 words, ours about 12.
    max_tokens = 64

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        prompt = PROMPT.format(document=example.data["document"])
        return GenerateRequest(messages=user_turn(prompt), max_tokens=self.max_tokens, stop=STOP)

    def hypothesis(self, text: str) -> str:
        """The output as compared with the references; sources with odd reference casing override it."""
        return text.strip()

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        text = output_text(outputs, STOP)
        hyp = self.hypothesis(text)
        refs: list[str] = example.data["references"]
        stats = {m: get_metric(m).stats(hyp, refs) for m in self.metrics}
        return Scored(answer=normalize_text(text), references=refs, stats=stats)

    def training_pair(self, example: Example, stage: int = 0) -> tuple[tuple[Message, ...], str]:
        # One reference is enough to learn from; the first is the fuller one in our data.
        return self.request(example, []).messages, " " + example.data["references"][0]


class SummSynth(SummarizationTask):
    name = "summ_synth"
    description = "Synthetic 3-5 sentence news and meeting notes; one-sentence summaries, 2 references each."
    data_source = (
        "shipped: suites/summarization/data/test.jsonl (python -m kdeval_suites.summarization.make_data)"
    )
    offline = True
    max_tokens = 40
    #: The training split for distilled students; never overlaps the test file.
    train_path = data_dir(__file__) / "train.jsonl"

    def load(self, path: Path | None) -> list[Example]:
        def parse(obj: dict[str, Any], where: str) -> dict[str, Any]:
            return _doc(require_str(obj, "document", where), require_str_list(obj, "references", where))

        return load_records(path or data_dir(__file__) / "test.jsonl", ["document", "references"], parse)


class XSum(SummarizationTask):
    name = "xsum"
    description = "XSum (Narayan et al., 2018): one-sentence summaries of BBC articles."
    data_source = (
        "XSum JSONL with document and summary per line: the HF layout (document, summary, id) or the "
        "50-document human-evaluation sample of github.com/EdinburghNLP/XSum (document, summary, bbcid)"
    )

    def hypothesis(self, text: str) -> str:
        # The released references are lower-cased; BLEU and chrF are case-sensitive (ROUGE is not),
        # so lower-case the output too rather than penalise every capital letter.
        return text.strip().lower()

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        located = []
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            require(obj, ["document", "summary"], where)
            # The HF files call the BBC id `id`, the derived sample `bbcid`; the line keeps others unique.
            key = next((k for k in ("id", "bbcid") if obj.get(k) not in (None, "")), None)
            ex_id = id_of(obj[key], where, key) if key else f"L{lineno}"
            doc = _doc(require_str(obj, "document", where), [require_str(obj, "summary", where)])
            located.append((Example(ex_id, doc), where))
        return unique_examples(located)


class DialogSum(SummarizationTask):
    name = "dialogsum"
    description = "DialogSum (Chen et al., 2021): summaries of everyday dialogues; 3 references on test."
    data_source = (
        "DialogSum JSONL (fname, dialogue, summary1..3 on test; summary on train/dev), "
        "e.g. dialogsum.test.jsonl from github.com/cylnlp/dialogsum"
    )
    url = (
        "https://raw.githubusercontent.com/cylnlp/dialogsum/848cc8c05e0a04def79326539de827f1b28786a0/"
        "DialogSum_Data/dialogsum.test.jsonl"
    )
    _REFERENCE_FIELDS = ("summary1", "summary2", "summary3")

    def _references(self, obj: dict[str, Any], where: str) -> list[str]:
        numbered = [f for f in self._REFERENCE_FIELDS if obj.get(f) is not None]
        if not numbered:  # train/dev files carry one `summary`
            require(obj, ["summary"], where)
            return [require_str(obj, "summary", where)]
        return [require_str(obj, f, where) for f in numbered]

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        located = []
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            require(obj, ["fname", "dialogue"], where)
            doc = _doc(require_str(obj, "dialogue", where), self._references(obj, where))
            located.append((Example(id_of(obj["fname"], where, "fname"), doc), where))
        return unique_examples(located)


class SciTldr(SummarizationTask):
    name = "scitldr"
    description = "SciTLDR-A (Cachola et al., 2020): one-sentence TLDRs of paper abstracts, 2+ references."
    data_source = (
        "SciTLDR JSONL (source: list of sentences, target: list of TLDRs, paper_id), e.g. "
        "SciTLDR-Data/SciTLDR-A/test.jsonl from github.com/allenai/scitldr"
    )
    url = (
        "https://raw.githubusercontent.com/allenai/scitldr/5ccad9c00a60ad75c9e04abf7f27d0f53f983b20/"
        "SciTLDR-Data/SciTLDR-A/test.jsonl"
    )

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        located = []
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            require(obj, ["paper_id", "source", "target"], where)
            document = " ".join(require_str_list(obj, "source", where))
            refs = require_str_list(obj, "target", where)
            located.append((Example(id_of(obj["paper_id"], where, "paper_id"), _doc(document, refs)), where))
        return unique_examples(located)
