"""Answer extraction: the final number of a response, as a canonical string (or None).

- `paper`: the authors' rule: the last match of -?\\d*\\.?\\d+, as a float ("1,250" -> 250: a bug).
- `robust`: in order of trust: the last `#### N`, the last `\\boxed{...}`, the last "the answer is N" /
  "Answer: N", then the last number in the text. Understands thousands commas, `$`, `%`,
  negative numbers, decimals and fractions (`3/4`, `\\frac{3}{4}`).

Answers are canonical strings so that voting compares values: 42.0 -> "42", 0.750 -> "0.75".
Both extractors are total: any string in, a canonical string or None out, never an exception.
"""

from __future__ import annotations

import math
import re

_PAPER_NUMBER = re.compile(r"-?\d*\.?\d+")
_NUM = r"-?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\s?\$?\s?\.\d+"
_NUMBER = re.compile(rf"(?P<a>{_NUM})(?:\s*/\s*(?P<b>{_NUM}))?")
_FRAC = re.compile(r"\\d?frac\s*\{\s*(?P<a>[^{}]{1,40})\s*\}\s*\{\s*(?P<b>[^{}]{1,40})\s*\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*(?:[:=]\s*)?", re.IGNORECASE)
_MAX_CHARS = 200_000  # responses longer than this are scanned from their end only


def canonical_number(x: float) -> str | None:
    if not math.isfinite(x):
        return None
    x = round(x, 6)
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _to_float(s: str) -> float | None:
    s = s.replace("$", "").replace(",", "").replace(" ", "")
    try:
        return float(s)
    except (ValueError, OverflowError):
        return None


def _parse_number_match(m: re.Match) -> str | None:
    a = _to_float(m.group("a"))
    if a is None:
        return None
    if m.group("b") is not None:
        return _ratio(a, _to_float(m.group("b")))
    return canonical_number(a)


def _ratio(a: float | None, b: float | None) -> str | None:
    """a / b as a canonical number; None when either side is not a number or b is 0 (1/0 is no answer)."""
    if a is None or not b:
        return None
    return canonical_number(a / b)


def _frac_value(frac: re.Match) -> str | None:
    return _ratio(_to_float(frac.group("a")), _to_float(frac.group("b")))


def _first_number(text: str) -> str | None:
    frac = _FRAC.search(text)
    m = _NUMBER.search(text)
    if frac and (m is None or frac.start() <= m.start()):
        return _frac_value(frac)
    return _parse_number_match(m) if m else None


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007
        pass
    frac = None
    for frac in _FRAC.finditer(text):  # noqa: B007
        pass
    if frac and (last is None or frac.end() >= last.end()):  # the last number is in a \frac
        return _frac_value(frac)
    return _parse_number_match(last) if last else None


def _boxed_content(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, min(len(text), i + 500)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_paper(text: str) -> str | None:
    matches = _PAPER_NUMBER.findall(text[-_MAX_CHARS:])
    if not matches:
        return None
    try:
        return canonical_number(float(matches[-1]))
    except (ValueError, OverflowError):
        return None


def extract_robust(text: str) -> str | None:
    text = text[-_MAX_CHARS:]
    hashes = text.rfind("####")
    if hashes >= 0:
        tail = text[hashes + 4 :].split("\n", 1)[0][:200]
        ans = _first_number(_ANSWER_IS.sub("", tail, count=1))
        if ans is not None:
            return ans
    boxed = _boxed_content(text)
    if boxed is not None:
        ans = _first_number(boxed)
        if ans is not None:
            return ans
    said = None
    for said in _ANSWER_IS.finditer(text):  # noqa: B007
        pass
    if said is not None:
        ans = _first_number(text[said.end() : said.end() + 80].split("\n", 1)[0])
        if ans is not None:
            return ans
    return _last_number(text)


EXTRACTORS = {"robust": extract_robust, "paper": extract_paper}
