"""Thinking traces: splitting trace from answer, stops after the trace only, token counts,
delimiters found in a checkpoint, and what the report and results say about them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdeval import thinking
from kdeval.backends.prompting import PromptCodec
from kdeval.errors import UserError
from kdeval.thinking import split

THINK = ("<think>", "</think>")


@pytest.mark.parametrize(
    ("text", "opened", "stop", "trace", "answer", "state"),
    [
        # the stop string inside the trace does not cut it; the one after the answer does
        (
            "Question: why?\nbecause</think>\n#### 4\nQuestion: next",
            True,
            ("Question:",),
            "Question: why?\nbecause",
            "\n#### 4\n",
            "closed",
        ),
        # a "\n" stop right after <think> would have emptied the trace
        (
            "<think>\nstep one\nstep two</think> 7\nmore",
            False,
            ("\n",),
            "<think>\nstep one\nstep two",
            " 7",
            "closed",
        ),
        # never closed: no answer at all, even though the trace holds something answer-like
        ("the answer is 4 ...", True, ("\n",), "the answer is 4 ...", "", "open"),
        ("<think> 4 4 4", False, (), "<think> 4 4 4", "", "open"),
        # a model that does not think (no opening delimiter, none in the prompt): the text is the answer
        ("just 5\nQuestion:", False, ("Question:",), "", "just 5\n", ""),
    ],
)
def test_split(text: str, opened: bool, stop: tuple[str, ...], trace: str, answer: str, state: str) -> None:
    s = split(text, THINK, stop, opened)
    assert (s.trace, s.answer, s.state) == (trace, answer, state)


def test_without_delimiters_stops_cut_as_before() -> None:
    s = split("a\nb</think>c", None, ("\n",))
    assert (s.trace, s.answer, s.state, s.stopped) == ("", "a", "", True)


def test_full_text_puts_the_trace_back() -> None:
    for text, opened in (("plan</think> 42", True), ("<think>plan</think> 42", False), ("<think>pl", False)):
        s = split(text, THINK, (), opened)
        assert thinking.full_text(s.trace, s.answer, s.state, THINK, opened) == text
    # a server's reasoning parser returns the trace without delimiters
    assert thinking.full_text("plan", " 42", "closed", THINK) == "<think>plan</think> 42"
    assert thinking.full_text("plan", "", "open", THINK, opened=True) == "plan"


def test_parse_settings() -> None:
    assert thinking.parse("auto") == "auto"
    assert thinking.parse("off") is None
    assert thinking.parse(" <t> , </t> ") == ("<t>", "</t>")
    for bad in ("<think>", "<t>,<t>", ",x"):
        with pytest.raises(UserError, match="START,END"):
            thinking.parse(bad)


def test_detect_from_template_then_added_tokens(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    (a / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}<|assistant|><think>\n"}))
    # the template opens the trace; </think> appears in its history handling in real templates
    assert thinking.detect(a) is None
    (a / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "{% if '</think>' in c %}{% endif %}<think>\n"})
    )
    assert thinking.detect(a) == THINK
    b = tmp_path / "b"
    b.mkdir()
    (b / "tokenizer.json").write_text(
        json.dumps({"added_tokens": [{"content": "<think>"}, {"content": "</think>"}]})
    )
    assert thinking.detect(b) == THINK
    c = tmp_path / "c"
    c.mkdir()
    assert thinking.detect(c) is None


@pytest.fixture(scope="module")
def codec() -> PromptCodec:
    from transformers import PreTrainedTokenizerFast

    from kdeval.tinymodels import BOS, EOS, PAD, train_bpe

    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(["Question: what is 2 plus 2? The answer is 4.\n"] * 5, 300),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
    )
    tok.add_tokens(["<think>", "</think>"])  # added, not special: decode keeps them (as R1's tokenizer)
    return PromptCodec(tok)


def test_codec_keeps_the_trace_and_counts_its_tokens(codec: PromptCodec) -> None:
    tok = codec.tokenizer
    trace, answer, rest = "Question: is it 4?\n", " The answer is 4.\n", "Question: what"
    ids = tok.encode(trace, add_special_tokens=False) + tok.convert_tokens_to_ids(["</think>"])
    head = len(ids)
    ids += tok.encode(answer + rest, add_special_tokens=False) + [tok.eos_token_id]
    done = codec.finish(ids, ("Question:", "\n"), THINK, opened=True)
    assert done.thinking == "closed" and done.reasoning == trace
    assert done.text == " The answer is 4."  # cut at the answer's first stop ("\n"), not the trace's
    assert done.reasoning_tokens == head and done.stopped
    # kept: up to the token that completed the answer's stop string, trace included
    assert codec.decode(done.token_ids).startswith(trace + "</think> The answer is 4.")
    assert "what" not in codec.decode(done.token_ids)
    unfinished = codec.finish(ids[: head - 1], ("Question:",), THINK, opened=True)
    assert unfinished.thinking == "open" and unfinished.text == "" and not unfinished.stopped
    assert unfinished.reasoning_tokens == head - 1
    plain = codec.finish(ids, ("Question:",))  # no delimiters: the old behaviour, cut in the trace
    assert plain.text == "" and plain.thinking == ""
