"""Answer extraction (crescent/extraction.py): the paper's last-number rule with its comma bug,
the robust extractor's precedence (#### > boxed > "answer is" > last number), canonical numbers,
and totality: any string in, a canonical string or None out, quickly, never an exception."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crescent.cleaning import clean_default, clean_paper
from crescent.extraction import EXTRACTORS, canonical_number, extract_paper, extract_robust

FUNCS = [extract_paper, extract_robust, clean_paper, clean_default]
FAST = settings(max_examples=200, deadline=2000)


def test_registry():
    assert EXTRACTORS == {"robust": extract_robust, "paper": extract_paper}


# ---------------------------------------------------------------- canonical_number


@pytest.mark.parametrize(
    "x, want",
    [
        (42.0, "42"),
        (0.750, "0.75"),
        (-7.0, "-7"),
        (-0.0, "0"),
        (1e-7, "0"),  # rounded to 6 decimals
        (1 / 3, "0.333333"),
        (2.0000001, "2"),
        (3.5, "3.5"),
        (1e14, "100000000000000"),
        (1e20, "1e+20"),  # too large to print as an int
    ],
)
def test_canonical_number(x, want):
    assert canonical_number(x) == want


@pytest.mark.parametrize("x", [math.inf, -math.inf, math.nan])
def test_canonical_number_non_finite_is_none(x):
    assert canonical_number(x) is None


@given(st.floats(allow_nan=True, allow_infinity=True))
@FAST
def test_canonical_number_is_a_fixed_point(x):
    out = canonical_number(x)
    if not math.isfinite(x):
        assert out is None
    else:
        assert out is not None and canonical_number(float(out)) == out


# ---------------------------------------------------------------- paper


@pytest.mark.parametrize(
    "text, want",
    [
        ("The answer is 42.", "42"),
        ("so 3 + 4 = 7", "7"),
        ("It costs $12.50 in total", "12.5"),
        ("It drops to -5 degrees", "-5"),
        ("-.5", "-0.5"),
        ("#### 42.0", "42"),
        ("1,250", "250"),  # the paper's comma bug, reproduced
        ("The total is $1,250.00", "250"),
        ("3/4", "4"),
        ("\\boxed{12} and then 99", "99"),  # no precedence: the last number wins
        ("-$5", "5"),
    ],
)
def test_paper_last_number(text, want):
    assert extract_paper(text) == want


@pytest.mark.parametrize("text", ["", "no number here", "-.", "minus - and dot ."])
def test_paper_no_number_is_none(text):
    assert extract_paper(text) is None


@given(st.integers(min_value=1000, max_value=10**12))
@FAST
def test_paper_comma_bug_keeps_the_last_group(n):
    assert extract_paper(f"The answer is {n:,}") == str(int(f"{n:,}".rsplit(",", 1)[1]))
    assert extract_paper(f"The answer is {n}") == str(n)


# ---------------------------------------------------------------- robust


@pytest.mark.parametrize(
    "text, want",
    [
        ("#### 1,250", "1250"),
        ("She pays $3.50", "3.5"),
        ("The answer is 42.", "42"),
        ("Answer: -7", "-7"),
        ("the answer = 0.5", "0.5"),
        ("\\boxed{\\frac{3}{4}}", "0.75"),
        ("\\boxed{\\dfrac{1}{8}}", "0.125"),
        ("3/4", "0.75"),
        ("10 / 4", "2.5"),
        ("The answer is: 1/2", "0.5"),
        ("It costs $ 1,250.00 in total", "1250"),
        ("-$5", "-5"),
        ("50%", "50"),
        (".5", "0.5"),
        ("#### 3.140", "3.14"),
        ("value 0.1234567", "0.123457"),
        ("So the probability is \\frac{3}{4}.", "0.75"),  # a trailing \frac is one number
        ("\\frac{1}{2} of 10 is 5", "5"),
    ],
)
def test_robust_values(text, want):
    assert extract_robust(text) == want


@pytest.mark.parametrize(
    "text, want",
    [
        # #### beats everything, even a later \boxed
        ("The answer is 5. #### 7", "7"),
        ("#### 12\n\\boxed{13}", "12"),
        ("#### 10 apples and 20 pears", "10"),  # the first number after ####
        ("#### The answer is 12", "12"),
        # boxed beats "answer is" and a later stray number
        ("\\boxed{12} and then 99", "12"),
        ("\\boxed{3} the answer is 8", "3"),
        ("\\boxed{7} ... \\boxed{9}", "9"),  # the last \boxed
        # "answer is" beats the last number; the last "answer is" wins
        ("the answer is 8 then 9", "8"),
        ("Answer: 5 apples. Then 6", "5"),
        ("The answer is 2. The answer is 5. Finally 99", "5"),
        # a level without a number falls through to the next one
        ("#### none\n\\boxed{4} then 6", "4"),
        ("\\boxed{x} The answer is 3, not 6", "3"),
        ("\\boxed{x} so 8", "8"),
        ("\\boxed{3 unclosed and then 5", "5"),
    ],
)
def test_robust_precedence(text, want):
    assert extract_robust(text) == want


@pytest.mark.parametrize("text", ["", "no number here", "#### none", "\\boxed{x}", "answer is"])
def test_robust_no_number_is_none(text):
    assert extract_robust(text) is None


@pytest.mark.parametrize(
    "text", ["\\boxed{1/0}", "#### 5/0", "The answer is \\frac{3}{0}", "so 7/0", "\\frac{\\pi}{2}"]
)
def test_robust_undefined_ratio_is_no_answer(text):
    # a zero denominator (or a non-numeric numerator) is no answer, not its numerator
    assert extract_robust(text) is None


@given(st.integers(min_value=-(10**12), max_value=10**12))
@FAST
def test_robust_reads_integers_in_every_format(n):
    for text in (
        f"#### {n}",
        f"#### {n:,}",
        f"\\boxed{{{n:,}}}",
        f"The answer is {n}.",
        f"x {n:,}",
    ):
        assert extract_robust(text) == str(n), text


@given(st.integers(min_value=-999, max_value=999), st.integers(min_value=1, max_value=999))
@FAST
def test_robust_reads_fractions(a, b):
    want = canonical_number(a / b)
    assert extract_robust(f"\\boxed{{\\frac{{{a}}}{{{b}}}}}") == want
    assert extract_robust(f"#### {a}/{b}") == want


# ---------------------------------------------------------------- totality and speed


def _is_canonical(out) -> bool:
    return out is None or (isinstance(out, str) and canonical_number(float(out)) == out)


@given(st.text())
@FAST
def test_extractors_total_on_any_text(text):
    for extract in (extract_paper, extract_robust):
        assert _is_canonical(extract(text))


MATHY = st.text(alphabet="0123456789,.-$/% #\n{}\\boxedfracanswer is:=", max_size=300)


@given(MATHY)
@FAST
def test_extractors_total_on_math_like_text(text):
    for extract in (extract_paper, extract_robust):
        assert _is_canonical(extract(text))


@given(st.text())
@FAST
def test_cleaners_total_on_any_text(text):
    for clean in (clean_paper, clean_default):
        assert isinstance(clean(text), str)


def _repeat_to(n: int):
    return lambda s: (s * (n // len(s) + 1))[:n]


LONG = st.one_of(
    st.text(alphabet="0123456789,", min_size=1, max_size=20),
    st.text(alphabet="0123456789,.-$/ ", min_size=1, max_size=20),
    st.text(alphabet=" \n\t(-*#:?.", min_size=1, max_size=20),
    st.text(alphabet="\\boxed{frac}#answer is 1/2 ", min_size=1, max_size=30),
    st.text(min_size=1, max_size=20),
).map(_repeat_to(200_000))


@given(LONG)
@settings(max_examples=30, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
def test_all_total_and_fast_on_200k_char_texts(text):
    for f in FUNCS:
        t0 = time.perf_counter()
        out = f(text)
        assert time.perf_counter() - t0 < 1.5, f.__name__
        assert _is_canonical(out) if f in (extract_paper, extract_robust) else isinstance(out, str)


ADVERSARIAL = {
    "huge_number": "9" * 5000,
    "huge_decimal": "0." + "9" * 5000,
    "huge_with_commas": "1" + ",999" * 3000,
    "huge_fraction": "9" * 400 + "/" + "0." + "0" * 400 + "1",
    "nested_boxed": "\\boxed{" * 2000,
    "nested_boxed_closed": "\\boxed{" * 2000 + "7" + "}" * 2000,
    "nested_frac": "\\frac{" * 2000 + "1" + "}" * 2000,
    "many_hashes": "#### " * 40_000,
    "many_answer_is": "The answer is " * 15_000,
    "digits_commas": "1," * 100_000,
    "question_marks": "?" * 200_000,
    "long_whitespace": "(" + " " * 200_000 + "x?",
    "lone_surrogates": "\ud83d\ude0a #### 5 \ud800?",
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
@pytest.mark.parametrize("f", FUNCS, ids=lambda f: f.__name__)
def test_adversarial_inputs(f, name):
    text = ADVERSARIAL[name]
    t0 = time.perf_counter()
    out = f(text)
    assert time.perf_counter() - t0 < 1.5
    if f in (extract_paper, extract_robust):
        assert _is_canonical(out)
    else:
        assert isinstance(out, str)


def test_adversarial_values():
    assert extract_paper("9" * 5000) is None  # inf is not an answer
    assert extract_robust("9" * 5000) is None
    assert extract_robust(ADVERSARIAL["nested_boxed_closed"]) == "7"
    assert extract_robust(ADVERSARIAL["lone_surrogates"]) == "5"
