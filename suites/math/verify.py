"""Final answers of competition math, checked for mathematical equivalence with math-verify.

`extract_answer` finds a model's final answer (the last \\boxed{...}); `equivalent` says whether
it equals the gold answer as mathematics (\\frac{1}{2} = 0.5, 2\\sqrt{2} = \\sqrt{8}, x=3 = 3,
sets, intervals), using HuggingFace's math-verify (sympy underneath). Nothing here knows about
metrics or tasks.

Timeouts: math-verify guards parsing and comparison with signal.alarm, which works only in the
main thread; called from any other thread with its default timeouts, `parse` raises ValueError
("doesn't support threaded environment") instead of returning. So the timeouts are kept in the
main thread and switched off elsewhere (`parsing_timeout=None`, `timeout_seconds=None`: no
signals, no crash). What the timeout mostly stops, sympy computing an answer such as 9^{9^{9^9}},
`_costly` stops in every thread: answers with astronomically large powers or factorials are not
compared (they count as wrong). Off the main thread, parsing or a comparison that is slow for
another reason is not cut short (e.g. \\binom{10^7}{5 \\cdot 10^6}, which the parser computes):
score in the main thread, as `kdeval.aggregate` does, to have math-verify's timeouts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

#: math-verify's own per-call limits (seconds), used in the main thread only.
TIMEOUT_S = 5
#: Answers with a power or factorial beyond these are not compared, in any thread
#: (2^{10^6} or 10^5! take well under a second; 9^{9^9} does not finish).
MAX_EXPONENT = 10**6
MAX_FACTORIAL = 10**5

_CONFIGS = (LatexExtractionConfig(), ExprExtractionConfig())
_BOXED = ("\\boxed", "\\fbox")


class _NoTimeoutWarning(logging.Filter):
    """Drop math-verify's one-time warning that timeouts are off: we chose that, see above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutWarning())


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse(text: str, configs: tuple[Any, ...] = _CONFIGS) -> list[Any]:
    return list(parse(text, extraction_config=list(configs), parsing_timeout=_timeout()))


def _braced(text: str, start: int) -> str | None:
    """The content of the brace group opening at text[start] ("{"), or None when it never closes."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped brace (\{ \}) does not open or close a group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} (or \\fbox{...}), braces balanced.

    >>> last_boxed("so \\\\boxed{1} or rather \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> last_boxed("\\\\boxed{\\\\{1, 2\\\\}}"), last_boxed("\\\\boxed{3} then \\\\boxed{4"), last_boxed("4")
    ('\\\\{1, 2\\\\}', '3', None)
    """
    found = None
    for command in _BOXED:
        pos = text.find(command)
        while pos >= 0:
            brace = pos + len(command)
            while brace < len(text) and text[brace] == " ":
                brace += 1
            if brace < len(text) and text[brace] == "{":
                content = _braced(text, brace)
                if content is not None and (found is None or pos > found[0]):
                    found = (pos, content)
            pos = text.find(command, pos + 1)
    return found[1].strip() if found else None


def extract_answer(text: str) -> str:
    """The model's final answer: the last \\boxed{...}'s content, else math-verify's extraction
    of the last expression or number (after "final answer is" and the like when there is one);
    "" when there is none.

    >>> extract_answer("... so the answer is \\\\boxed{\\\\frac{3}{4}}."), extract_answer("So x = 7.")
    ('\\\\frac{3}{4}', '7')
    >>> extract_answer("I do not know.")
    ''
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    # With fallback_mode "first_match" (the default) the matched text comes after the parsed value.
    texts = [x for x in _parse(text) if isinstance(x, str)]
    return texts[0].strip() if texts else ""


def _costly(value: Any) -> bool:
    """Whether a parsed value holds a power or factorial too large to compare without a timeout."""
    if not isinstance(value, sympy.Basic):
        return False
    for node in sympy.preorder_traversal(value):
        if isinstance(node, sympy.Pow) and node.exp.is_number:
            size, limit = node.exp, MAX_EXPONENT
        elif isinstance(node, sympy.factorial) and node.args[0].is_number:
            size, limit = node.args[0], MAX_FACTORIAL
        else:
            continue
        try:
            # mpmath floats hold any magnitude, so this stays fast even for towers of powers.
            if bool(abs(sympy.N(size, 3)) > limit):
                return True
        except (TypeError, ValueError, ArithmeticError):
            return True
    return False


def _parse_answer(answer: str) -> list[Any]:
    """An extracted answer, parsed (LaTeX first, then plain expressions), [] when it cannot be."""
    if not answer.strip():
        return []
    return _parse(f"\\boxed{{{answer}}}")


def equivalent(answer: str, gold: str) -> bool:
    """Whether an extracted answer equals the gold answer as mathematics (math-verify).

    Both are parsed as the content of a \\boxed{}; identical texts are equivalent even when
    math-verify cannot parse them (e.g. "\\text{Evelyn}").

    >>> equivalent("\\\\frac12", "0.5"), equivalent("x=3", "3"), equivalent("0.33", "\\\\frac{1}{3}")
    (True, True, False)
    """
    if not answer.strip():
        return False
    if answer.strip() == gold.strip():
        return True
    # The size check applies in every thread, so a verdict never depends on where scoring runs.
    target = [x for x in _parse_answer(answer) if not _costly(x)]
    if not target:
        return False
    return bool(verify(_parse_answer(gold), target, timeout_seconds=_timeout()))


def canonical(answer: str) -> str:
    """The answer as compared between samples and models (majority vote, agreement).

    math-verify's value printed by sympy when it parses (so "\\frac12" and "\\frac{1}{2}" agree),
    else the text without spaces.

    >>> canonical("\\\\frac12"), canonical("2 \\\\sqrt{2}"), canonical("\\\\text{(C) }"), canonical("")
    ('1/2', '2*sqrt(2)', 'c', '')
    >>> canonical("Evelyn"), canonical("x")
    ('evelyn', 'x')
    """
    text = "".join(answer.split())
    if not text:
        return ""
    if text.isalpha():  # a word, not a product of symbols: "Evelyn", not E*e*l*n*v*y
        return text.lower()
    values = [x for x in _parse_answer(answer) if not isinstance(x, str)]
    if values:
        try:  # printing never evaluates, so 9^{9^{9^9}} prints as it was written
            return "".join(str(values[0]).split())
        except ValueError:  # integers longer than Python prints by default
            pass
    return text
