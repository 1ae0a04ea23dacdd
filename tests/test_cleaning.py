"""Question cleaners (crescent/cleaning.py): `paper` reproduces the authors' cleaner exactly,
`default` keeps the math and drops chatter. Pure logic, no model."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crescent.cleaning import CLEANERS, PAPER_BOILERPLATE, clean_default, clean_paper

SARAH = (
    "Sarah is planning a party for her birthday and wants to make sure she has enough food for all"
    " of her guests. She has a bowl of chips that she knows will feed 6 people, and she also has a"
    " bag of pizza that will feed 8 people. How many total servings of food does Sarah have if she"
    " wants to make sure everyone gets at least 2 servings of food?"
)
# the example in the authors' questions/preprocess/extract_only_question.py
AUTHORS_EXAMPLE = (
    chr(0x1F60A)
    + "\n\nOf course, I'd be happy to create a math word problem for you! Here it is:\n\n"
    + SARAH
)

# a question full of math that the paper cleaner damages and the default cleaner keeps
MATHY = (
    "Sure! Here's one:\n\n**Problem:** A store sells a laptop for $1,250. During a sale, the price"
    " drops by 3/4 of $100 and the outside temperature is -5 degrees. What is the new price of the"
    " laptop if tax adds $2.50? Let me know if you need help!"
)
MATHY_QUESTION = (
    "A store sells a laptop for $1,250. During a sale, the price drops by 3/4 of $100 and the"
    " outside temperature is -5 degrees. What is the new price of the laptop if tax adds $2.50?"
)

ANSWER_Q = "Jane took a test with 20 questions. How many questions did she answer correctly?"


def test_registry():
    assert CLEANERS == {"default": clean_default, "paper": clean_paper}


# ---------------------------------------------------------------- paper (the authors' cleaner)


def test_paper_boilerplate_is_the_authors_list():
    assert PAPER_BOILERPLATE == (
        "of course", "math word problem", "for you to solve", "i'd be happy to", "here's one",
        "happy to help", "here it is", "happy to", "i need", "word problem", "help me",
        "your task", "answer", "here is one", "here is a problem", "math problem", "heres one",
        "solve it", "sure thing", "modified", "math questions", "math question",
        "how about this", "heres your problem",
    )  # fmt: skip


def test_paper_authors_example():
    # emoji and apostrophe removed, "Of course..." and "Here it is:" dropped; the authors' join
    # keeps the empty piece after the final '?', hence the trailing space
    assert clean_paper(AUTHORS_EXAMPLE) == SARAH + " "


def test_paper_authors_example_with_surrogate_escape():
    # the authors wrote the emoji as "\ud83d\ude0a", i.e. two lone surrogates in Python 3
    text = "\ud83d\ude0a" + AUTHORS_EXAMPLE[1:]
    assert clean_paper(text) == SARAH + " "


def test_paper_requires_a_question_mark():
    assert clean_paper("Tom has 5 apples. He eats 2.") == ""
    assert clean_paper("") == ""
    # a '?' that the character filter would not remove is enough, even a lone one
    assert clean_paper("?") == "? "


def test_paper_question_mark_survives_only_if_ascii():
    # the full-width question mark is removed by the character filter: no '?' left
    assert clean_paper("How many apples are left\uff1f") == ""


def test_paper_cuts_after_the_first_question_mark():
    assert clean_paper("What is 2 plus 2? What is 3 plus 3?") == "What is 2 plus 2? "


def test_paper_deletes_math_symbols():
    assert clean_paper(MATHY) == (
        "Sure! Problem: A store sells a laptop for 1,250. During a sale, the price drops by 34 of"
        " 100 and the outside temperature is 5 degrees. What is the new price of the laptop if"
        " tax adds 2. 50? "
    )


def test_paper_drops_sentences_with_answer():
    # the question sentence contains "answer": the paper drops it, leaving no question at all
    assert clean_paper(ANSWER_Q) == "Jane took a test with 20 questions. "


@pytest.mark.parametrize("phrase", [p for p in PAPER_BOILERPLATE if "'" not in p])
def test_paper_each_phrase_drops_its_sentence(phrase):
    text = f"Tom has 3 apples. Bob says {phrase.upper()} loudly. How many apples are there?"
    assert clean_paper(text) == "Tom has 3 apples. How many apples are there? "


def test_paper_phrases_with_apostrophes_never_match():
    # the character filter removes "'" before matching, so "i'd be happy to" cannot fire on its
    # own ("happy to" does); a sentence with only "I'd be glad" survives, without its apostrophe
    assert clean_paper("I'd be glad. How many apples are there?") == (
        "Id be glad. How many apples are there? "
    )
    assert clean_paper("I'd be happy to. How many apples are there?") == (
        "How many apples are there? "
    )


def test_paper_splits_on_all_sentence_marks():
    text = "Tom is here; here it is: Tom has 3 apples! Solve it. How many apples are there?"
    assert clean_paper(text) == "Tom is here; Tom has 3 apples! How many apples are there? "


@settings(max_examples=200, deadline=2000)
@given(st.text())
def test_paper_output_invariants(text):
    out = clean_paper(text)
    assert isinstance(out, str)
    assert re.fullmatch(r"[a-zA-Z0-9\s.,:;?!]*", out)
    if out:
        assert out.endswith(" ")  # the authors' join always ends with the empty tail piece
        assert out.count("?") <= 1
        assert "?" not in out or out.endswith("? ")
    if "?" not in re.sub(r"[^a-zA-Z0-9\s.,:;?!]", "", text):
        assert out == ""


# ---------------------------------------------------------------- default


def test_default_authors_example():
    assert clean_default(AUTHORS_EXAMPLE) == SARAH


def test_default_keeps_math_paper_does_not():
    out = clean_default(MATHY)
    assert out == MATHY_QUESTION
    for kept in ("$1,250", "3/4", "-5", "$2.50"):
        assert kept in out
        assert kept not in clean_paper(MATHY)


def test_default_keeps_sentences_with_answer():
    assert clean_default(ANSWER_Q) == ANSWER_Q
    assert "answer" not in clean_paper(ANSWER_Q)


@pytest.mark.parametrize(
    "raw",
    [
        "Sure! Here's one:\n\nTom has 5 apples and eats 2. How many apples are left?",
        "**Problem:** Tom has 5 apples and eats 2. How many apples are left?",
        "Problem 2: Tom has 5 apples and eats 2. How many apples are left?",
        "Question:\n1.\nTom has 5 apples and eats 2. How many apples are left?",
        "Of course! Here is a new problem for you:\n\nTom has 5 apples and eats 2. How many apples"
        " are left?\n\nI hope you enjoy it! Good luck!",
        'Certainly!\n\n"Tom has 5 apples and eats 2. How many apples are left?"',
        "- Tom has 5 apples and eats 2.\n- How many apples are left?",
        "`Tom has 5 apples` and eats 2. __How many apples are left?__",
    ],
)
def test_default_strips_chatter_markdown_and_labels(raw):
    assert clean_default(raw) == "Tom has 5 apples and eats 2. How many apples are left?"


def test_default_keeps_operators_and_parentheses():
    q = "If x^2 = 4 * (3 + 1) / 2 - 4 and y = 50% of x, what is x + y?"
    assert clean_default(q) == q


def test_default_requires_a_question_mark():
    assert clean_default("Tom has 5 apples and eats 2 of them.") == ""
    assert clean_default("") == ""


def test_default_cuts_after_the_first_question_mark():
    assert clean_default("What is 2 + 2 apples? What is 3 + 3 apples?") == "What is 2 + 2 apples?"


def test_default_rejects_too_short_or_letterless():
    assert clean_default("Why?") == ""
    assert clean_default("Why is it so?", min_chars=20) == ""
    assert clean_default("Why is it so?", min_chars=5) == "Why is it so?"
    assert clean_default("1234567 + 89 = ?") == ""


def test_default_rejects_when_only_chatter_remains():
    assert clean_default("Sure! Here's one: can you solve it?") == ""


def test_default_drops_emoji_and_control_characters():
    q = "Tom has 5 apples " + chr(0x1F34E) + "\x00\u200b and eats 2. How many are left?"
    assert clean_default(q) == "Tom has 5 apples and eats 2. How many are left?"


def test_default_normalises_full_width_characters():
    assert clean_default("How many apples are left\uff1f") == "How many apples are left?"


@settings(max_examples=200, deadline=2000)
@given(st.text())
def test_default_output_invariants(text):
    out = clean_default(text)
    assert isinstance(out, str)
    if out:
        assert out.endswith("?") and out.count("?") == 1
        assert len(out) >= 12 and re.search(r"[A-Za-z]", out)
        assert out == out.strip() and "\n" not in out and "  " not in out


# ---------------------------------------------------------------- no catastrophic backtracking


@pytest.mark.parametrize(
    "text",
    [
        "(" + " " * 50_000 + "x?",  # label regex: \W* followed by \s* ... \s*
        "problem" + " " * 50_000 + "x?",  # label regexes: \s*\d*\s*
        "Problem 1" + " \t" * 25_000 + ": x?",
        " \n" * 50_000 + "x?",  # markdown bullet regex: ^\s* at every line start
        "\n" * 100_000 + "- How many apples are left?",
    ],
)
@pytest.mark.parametrize("clean", [clean_default, clean_paper])
def test_long_whitespace_runs_are_fast(clean, text):
    t0 = time.perf_counter()
    clean(text)
    assert time.perf_counter() - t0 < 2.0
