"""Text helpers behind the metrics: SQuAD v1.1 answer matching and final-number extraction.

Re-exported by `kdeval.metrics`; import them from there.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

__all__ = [
    "extract_final_number",
    "normalize_answer",
    "normalize_text",
    "squad_exact_match",
    "squad_f1",
]

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _need_refs(references: Sequence[str]) -> None:
    if isinstance(references, str):
        raise TypeError("references must be a sequence of strings, not a single string")
    if len(references) == 0:
        raise ValueError("at least one reference is needed")


def normalize_answer(s: str) -> str:
    """Normalize an answer as the official SQuAD v1.1 evaluate script does.

    Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.

    >>> normalize_answer("The  Denver Broncos!")
    'denver broncos'
    >>> normalize_answer("an apple, a day")
    'apple day'
    """
    text = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals some normalized reference, else 0.0.

    >>> squad_exact_match("Denver Broncos", ["Denver Broncos", "the Broncos"])
    1.0
    >>> squad_exact_match("Broncos team", ["Denver Broncos"])
    0.0
    """
    _need_refs(references)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in references))


def _f1(prediction_tokens: list[str], reference_tokens: list[str]) -> float:
    common = Counter(prediction_tokens) & Counter(reference_tokens)
    num_same = sum(common.values())
    if num_same == 0:  # v1.1 behaviour: empty vs empty scores 0 too
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, references: Sequence[str]) -> float:
    """Token-overlap F1 of the official SQuAD v1.1 script, max over references (0..1).

    >>> squad_f1("the Broncos team", ["Denver Broncos"])
    0.5
    >>> squad_f1("Denver Broncos", ["Broncos", "Denver Broncos"])
    1.0
    """
    _need_refs(references)
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(ref).split()) for ref in references)


def normalize_text(s: str) -> str:
    """Lowercase, collapse runs of whitespace, strip: the form used for agreement on free text.

    >>> normalize_text("  Hello\\n  World ")
    'hello world'
    """
    return " ".join(s.lower().split())


# A number: optional sign, optional currency symbol, digits with optional thousands separators
# ("1,234") and decimals ("3.50", ".5"), optional "/denominator". A number glued to a letter, dot
# or slash on its left is skipped ("H2O", "v1.2", the "/2020" of a date); so is the minus in "5-3".
_NUMBER = re.compile(
    r"(?<![\w./])(?P<sign>[-\u2212])?[$\u20ac\u00a3\u00a5]?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:/(?P<den>\d+))?(?!\d|/\d)"
)
_HASHES = re.compile(r"####")
_ANSWER_IS = re.compile(r"answer\s*(?:is\b\s*:?|:)", re.IGNORECASE)


def _canonical(match: re.Match[str]) -> str | None:
    negative = match.group("sign") is not None
    num = match.group("num").replace(",", "")
    den = match.group("den")
    if den is not None:  # a fraction is kept as written, only the sign is normalized
        return ("-" if negative else "") + f"{num}/{den}"
    try:
        value = Decimal(num)
    except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
        return None
    if negative:
        value = -value
    if value == value.to_integral_value():
        return str(int(value))  # "18.0" -> "18", "-0" -> "0"
    return format(value.normalize(), "f")  # "3.50" -> "3.5"


def _first_number_after(marker: re.Pattern[str], text: str) -> str | None:
    """First number after the last occurrence of `marker` that is followed by a number."""
    for found in reversed(list(marker.finditer(text))):
        match = _NUMBER.search(text, found.end())
        if match is not None:
            return _canonical(match)
    return None


def extract_final_number(text: str) -> str | None:
    """The final numeric answer in free text, parsed (never evaluated) and canonicalized.

    Prefers the number after the last "####", then after the last "answer is"/"Answer:", else
    takes the last number in the text. Commas and currency symbols are dropped, trailing zeros
    of decimals removed ("3.50" -> "3.5", "18.00" -> "18"), fractions kept as written ("3/4").
    Returns None when the text has no number.

    >>> extract_final_number("She pays 2 * 9 = 18 dollars.\\n#### 1,234")
    '1234'
    >>> extract_final_number("The answer is $18.00.")
    '18'
    >>> extract_final_number("First 3, then 4, finally -3.50")
    '-3.5'
    >>> extract_final_number("no digits here") is None
    True
    """
    for marker in (_HASHES, _ANSWER_IS):
        found = _first_number_after(marker, text)
        if found is not None:
            return found
    matches = list(_NUMBER.finditer(text))
    return _canonical(matches[-1]) if matches else None
