"""Question cleaners: turn a model's raw bait-prompt output into one question (or "" to reject).

- `paper`: the authors' cleaner, reproduced exactly (questions/preprocess/extract_only_question.py):
  keep only [a-zA-Z0-9\\s.,:;?!], require a '?', cut after the first '?', split into sentences on
  [.:;?!] and drop every sentence containing a boilerplate phrase. It deletes $ % - / and any
  sentence with "answer": it damages math, and is kept only to reproduce the paper.
- `default`: keeps math symbols ($ % - / + * = ^ parentheses, decimals), strips markdown, labels
  ("Problem:") and chatter sentences ("Sure! Here's one:"), requires a '?' and cuts after the first.
"""

from __future__ import annotations

import re
import unicodedata

PAPER_BOILERPLATE = (
    "of course", "math word problem", "for you to solve", "i'd be happy to", "here's one",
    "happy to help", "here it is", "happy to", "i need", "word problem", "help me", "your task",
    "answer", "here is one", "here is a problem", "math problem", "heres one", "solve it",
    "sure thing", "modified", "math questions", "math question", "how about this",
    "heres your problem",
)  # fmt: skip

# Chatter only: phrases that never belong to a problem statement (unlike "answer" or "modified").
CHATTER = (
    "of course", "for you to solve", "i'd be happy", "i would be happy", "happy to help",
    "here's one", "heres one", "here is one", "here it is", "here's a ", "here is a ",
    "here's the ", "here is the ", "here's your", "heres your", "sure thing", "how about this",
    "let me know", "hope this", "hope you", "good luck", "your task", "solve it", "enjoy",
    "feel free", "i created", "i've created", "i have created", "as an ai", "i'm going to",
    "i am going to", "i'm so glad", "i'm glad", "the problem is:", "the question is:", "here goes",
)  # fmt: skip

_LABEL = re.compile(
    r"^(?:(?:math\s+|word\s+|new\s+|modified\s+|unique\s+)*(?:problem|question)s?\s*(?:\d+\s*)?(?:[:.\-]\s*)?|\W*)$",
    re.IGNORECASE,
)
_LEADING_LABEL = re.compile(
    r"^\s*(?:(?:math\s+|word\s+|new\s+|modified\s+)*(?:problem|question)\s*(?:\d+\s*)?:)\s*",
    re.IGNORECASE,
)
_ENUMERATION = re.compile(r"^(?:\d{1,2}|[a-z]|[ivx]{1,4})[.)]$", re.IGNORECASE)
_INTERJECTION = re.compile(
    r"^(?:sure|certainly|okay|ok|absolutely|great|alright|of course)\W*$", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"(?<=[.:;?!])\s+")
_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*|^[^\S\n]*[-*]\s+)", re.MULTILINE)


def clean_paper(text: str) -> str:
    """The authors' cleaner, verbatim in behaviour."""
    cleaned = re.sub(r"[^a-zA-Z0-9\s.,:;?!]", "", text)
    if "?" not in cleaned:
        return ""
    cleaned = cleaned.split("?")[0] + "?"
    parts = re.split(r"([.:;?!])", cleaned)
    sentences = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
    if len(parts) % 2 != 0:
        sentences.append(parts[-1])
    kept = []
    for sentence in sentences:
        sentence = sentence.strip()
        if not any(k in sentence.lower() for k in PAPER_BOILERPLATE):
            kept.append(sentence)
    return " ".join(kept)


def _keep_char(ch: str) -> bool:
    if ch in "\n\t ":
        return True
    cat = unicodedata.category(ch)
    # drop control, format, surrogate, private-use, unassigned and pictographic symbols (emoji)
    return not (cat[0] == "C" or cat == "So")


def clean_default(text: str, min_chars: int = 12) -> str:
    """Keep the problem statement with its math; drop chatter. Returns "" when no question remains."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if _keep_char(ch))
    text = _MARKDOWN.sub("", text)
    if "?" not in text:
        return ""
    text = text.split("?", 1)[0] + "?"
    kept = []
    for sentence in _SENTENCE_END.split(text.replace("\n", " ")):
        sentence = _LEADING_LABEL.sub("", sentence.strip()).strip().strip("\"'").strip()
        if (
            not sentence
            or _LABEL.match(sentence)
            or _ENUMERATION.match(sentence)
            or _INTERJECTION.match(sentence)
        ):
            continue
        if (
            sentence.endswith(":") and len(sentence.split()) <= 8
        ):  # "Here is the problem:" and the like
            continue
        low = sentence.lower()
        if any(c in low for c in CHATTER):
            continue
        kept.append(sentence)
    out = re.sub(r"\s+", " ", " ".join(kept)).strip().strip("\"'").strip()
    if not out.endswith("?") or len(out) < min_chars or not re.search(r"[A-Za-z]", out):
        return ""
    return out


CLEANERS = {"default": clean_default, "paper": clean_paper}
