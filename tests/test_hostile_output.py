"""Hostile model output: the cleaners and answer extractors never raise and never hang on arbitrary
unicode, huge numbers, deeply nested braces or very long text (property tests with a time limit)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crescent.cleaning import CLEANERS
from crescent.extraction import EXTRACTORS

FUNCS = [*(f"clean:{k}" for k in CLEANERS), *(f"extract:{k}" for k in EXTRACTORS)]
LIMIT_S = 1.0  # per call, on a 2-core CPU, for inputs up to ~200k characters


def _call(name: str, text: str):
    kind, key = name.split(":")
    fn = CLEANERS[key] if kind == "clean" else EXTRACTORS[key]
    t0 = time.perf_counter()
    out = fn(text)
    took = time.perf_counter() - t0
    assert took < LIMIT_S, f"{name} took {took:.2f} s on {len(text)} chars"
    assert out is None or isinstance(out, str)
    return out


digits = st.text("0123456789", min_size=1, max_size=400)
pieces = st.one_of(
    st.text(),  # arbitrary unicode, surrogates excluded by hypothesis
    digits.map(lambda d: f"#### {d}"),
    digits.map(lambda d: f"-{d}.{d}e{d[:3]}"),
    st.integers(1, 3000).map(lambda n: "\\boxed{" * n + "7" + "}" * (n // 2)),
    st.integers(1, 5000).map(lambda n: "1," * n),
    st.sampled_from(["$", "%", "/", "\\frac{1}{0}", "\\boxed{", "}", "####", "\x00", "\u202e"]),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", FUNCS)
@given(parts=st.lists(pieces, max_size=12))
@FAST
def test_never_raises_or_hangs_on_hostile_text(name, parts):
    _call(name, "".join(parts))


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize(
    "text",
    [
        "9" * 100_000,  # a 100k-digit number
        "#### " + "9" * 5000 + "e99999",
        "\\boxed{" * 20_000 + "1" + "}" * 20_000,  # deep nesting
        "The answer is 3. " * 12_000,  # ~200k characters
        "(" * 50_000 + "1" + ")" * 50_000,
        "1," * 60_000,
    ],
    ids=["huge-int", "huge-exponent", "deep-boxed", "long-text", "deep-parens", "commas"],
)
def test_extreme_inputs_finish_quickly(name, text):
    _call(name, text)
