"""A damaged cache (truncated line, tampered file, missing or unreadable marker) is detected,
reported in one line and recomputed: never trusted, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crescent.cache import MARKER, CacheEntry, GenerationCache, load_or_discard
from crescent.stages.answers import _read_chunk

from .cli_helpers import cli, run_dir_of


def _entry(tmp_path) -> CacheEntry:
    e = CacheEntry(tmp_path, "vote", "ab" * 32)
    e.dir.mkdir(parents=True)
    e.path("qa.jsonl").write_text('{"id": "q1", "answer": "7"}\n')
    e.finalize(["qa.jsonl"], {"qa_pairs": 1}, 1.0, {})
    return e


def test_a_tampered_file_of_the_same_size_is_detected_and_the_marker_dropped(tmp_path, capsys):
    e = _entry(tmp_path)
    assert e.is_complete()
    e.path("qa.jsonl").write_text('{"id": "q1", "answer": "9"}\n')  # same size, other content
    assert e.problem() == "qa.jsonl changed since it was written (sha256 differs)"
    assert e.check() is False
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "(sha256 differs); recomputing it" in out[0]
    assert not e.marker.exists() and e.path("qa.jsonl").exists()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda e: e.path("qa.jsonl").unlink(), "qa.jsonl is missing"),
        (lambda e: e.path("qa.jsonl").write_text("{"), "qa.jsonl has 1 bytes"),
        (lambda e: e.marker.write_text('{"stage": "vo'), f"{MARKER} is unreadable"),
        (lambda e: e.marker.unlink(), "not finished"),
    ],
)
def test_every_kind_of_damage_is_named(tmp_path, damage, why):
    e = _entry(tmp_path)
    damage(e)
    assert not e.is_complete() and e.problem().startswith(why)


def test_unreadable_raw_generations_are_regenerated(tmp_path, capsys):
    gens = GenerationCache(tmp_path, {"kind": "bait"})
    gens.put(0, [{"text": "a"}, {"text": "b"}])
    assert gens.get(0) == [{"text": "a"}, {"text": "b"}]
    f = gens.dir / "000000.jsonl"
    f.write_text(f.read_text()[:-5])  # a truncated last line
    assert gens.get(0) is None and not f.exists()
    assert "raw generations" in capsys.readouterr().out


def test_a_chunk_that_does_not_hold_its_questions_is_discarded(tmp_path):
    path = tmp_path / "answers-000000.jsonl"
    rows = [{"id": f"q{i}", "question": "x?", "responses": ["1", "2"]} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))  # cut at a line boundary
    assert _read_chunk(path, ["q0", "q1"], 2) == rows[:2]
    with pytest.raises(ValueError, match="not the 3 questions x 2 answers"):
        _read_chunk(path, ["q0", "q1", "q2"], 2)
    assert load_or_discard([path], lambda: _read_chunk(path, ["q0"], 2), "answers chunk") is None
    assert not path.exists()


TINY = ["debug=tiny", "stages=[questions,answers,vote]", "questions.max_calls=2", "logger=none"]


@pytest.mark.slow
def test_damaged_cache_is_recomputed_to_the_same_outputs(tmp_path):
    run_dir = run_dir_of(cli(TINY, tmp_path))
    files = ["questions/questions.jsonl", "answers/answers.jsonl", "vote/qa.jsonl",
             "vote/rejected.jsonl"]  # fmt: skip
    want = {f: (run_dir / f).read_bytes() for f in files}
    cache = tmp_path / "cache" / "stages"
    # damage: a tampered final file, truncated chunks, a truncated raw-generation file
    # (at this size either vote file may be empty, which one depends on the sampled text)
    entry = next(cache.glob("vote/*/"))
    voted = next(
        p for p in (entry / "qa.jsonl", entry / "rejected.jsonl") if b'"' in p.read_bytes()
    )
    voted.write_bytes(voted.read_bytes().replace(b'"', b"'", 1))
    chunk = sorted(cache.glob("answers/*/chunks/answers-*.jsonl"))[0]
    chunk.write_bytes(chunk.read_bytes()[:-7])
    next(cache.glob("answers/*/_COMPLETE.json")).unlink()
    raw = sorted((tmp_path / "cache" / "generations").glob("*/000001.jsonl"))[0]
    raw.write_bytes(raw.read_bytes()[:-3])
    next(cache.glob("questions/*/_COMPLETE.json")).unlink()
    for q_chunk in cache.glob("questions/*/chunks/call-000001.*"):
        q_chunk.unlink()  # call 1 is sampled again (its raw generations are damaged too)
    npy = next(cache.glob("questions/*/chunks/call-000000.npy"))
    npy.write_bytes(npy.read_bytes()[:-10])  # call 0's chunk: embeddings cut short
    res = cli(TINY, tmp_path)
    warnings = [x for x in res.stdout.splitlines() if x.startswith("[crescent] warning:")]
    assert any(f"{voted.name} changed since it was written" in w for w in warnings), warnings
    assert any("answers chunk" in w and "unreadable" in w for w in warnings), warnings
    assert any("raw generations" in w for w in warnings), warnings
    assert any("dedup chunk" in w for w in warnings), warnings
    got = {f: (Path(run_dir_of(res)) / f).read_bytes() for f in files}
    assert got == want
