"""The strict JSONL reader (crescent/records.py): every error names the key, the file and the line."""

from __future__ import annotations

import json

import pytest

from crescent.errors import CrescentError, InputError
from crescent.records import (
    ANSWER_ROW,
    QA_ROW,
    QUESTION_ROW,
    read_jsonl,
    response_finished,
    response_text,
)


def write(tmp_path, text: str, name: str = "in.jsonl"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def rows(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def test_reads_rows(tmp_path):
    p = write(tmp_path, rows({"question": "A?", "id": "x"}, {"question": "B?"}))
    assert read_jsonl(p, QUESTION_ROW, key="dedup.input") == [
        {"question": "A?", "id": "x"},
        {"question": "B?"},
    ]
    assert read_jsonl(str(p)) == read_jsonl(p, QUESTION_ROW)


def test_broken_json_names_key_file_and_line(tmp_path):
    p = write(
        tmp_path, rows({"question": "A?"}, {"question": "B?"}) + '{"question": "C?" "x": 1}\n'
    )
    with pytest.raises(InputError) as ei:
        read_jsonl(p, QUESTION_ROW, key="dedup.input")
    msg = str(ei.value)
    assert msg.startswith(f"dedup.input={p}: ")
    assert "line 3" in msg and "not valid JSON" in msg and "Expecting ',' delimiter" in msg
    assert isinstance(ei.value, CrescentError)


def test_without_key_the_label_is_the_path(tmp_path):
    p = write(tmp_path, "{oops\n")
    with pytest.raises(InputError, match=r"line 1 is not valid JSON") as ei:
        read_jsonl(p)
    assert str(ei.value).startswith(f"{p}: ")
    assert "=" not in str(ei.value).split(":", 1)[0]


def test_blank_lines_are_skipped_but_counted(tmp_path):
    p = write(tmp_path, '\n{"question": "A?"}\n   \n\t\n{"question": "B?"}\n\n')
    assert [r["question"] for r in read_jsonl(p, QUESTION_ROW)] == ["A?", "B?"]
    p = write(tmp_path, '\n{"question": "A?"}\n\n[1, 2]\n', "bad.jsonl")
    with pytest.raises(InputError, match=r"line 4 is not a JSON object"):
        read_jsonl(p, QUESTION_ROW)


def test_missing_field(tmp_path):
    p = write(tmp_path, rows({"question": "A?"}, {"id": "x"}))
    with pytest.raises(InputError) as ei:
        read_jsonl(p, QUESTION_ROW, key="dedup.input")
    msg = str(ei.value)
    assert msg.startswith(f"dedup.input={p}: line 2 ")
    assert "has no 'question' field" in msg and "a string" in msg


@pytest.mark.parametrize("value", [42, None, ["A?"], {"text": "A?"}])
def test_wrong_type(tmp_path, value):
    p = write(tmp_path, rows({"question": value}))
    with pytest.raises(InputError, match=r"line 1 field 'question' must be a string") as ei:
        read_jsonl(p, QUESTION_ROW, key="vote.input")
    assert str(ei.value).startswith(f"vote.input={p}: ")


def test_answer_rows(tmp_path):
    good = {
        "question": "A?",
        "responses": ["#### 1", {"text": "#### 2", "finish_reason": "length"}],
    }
    p = write(tmp_path, rows(good))
    assert read_jsonl(p, ANSWER_ROW) == [good]


@pytest.mark.parametrize(
    "responses", ["#### 1", [{"finish_reason": "stop"}], [{"text": 3}], [1], None]
)
def test_answer_rows_bad_responses(tmp_path, responses):
    p = write(tmp_path, rows({"question": "A?", "responses": responses}))
    with pytest.raises(InputError, match=r"line 1 field 'responses' must be a list"):
        read_jsonl(p, ANSWER_ROW, key="answers.input")


def test_qa_rows_check_every_field(tmp_path):
    p = write(tmp_path, rows({"question": "A?", "answer": 4, "response": "#### 4"}))
    with pytest.raises(InputError, match=r"field 'answer' must be a string"):
        read_jsonl(p, QA_ROW)
    p = write(tmp_path, rows({"question": "A?", "answer": "4"}), "qa.jsonl")
    with pytest.raises(InputError, match=r"has no 'response' field"):
        read_jsonl(p, QA_ROW)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as ei:
        read_jsonl(p, QUESTION_ROW, key="dedup.input")
    assert str(ei.value).startswith(f"dedup.input={p}: file not found")


def test_a_directory_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_jsonl(tmp_path)


def test_empty_file_with_schema(tmp_path):
    p = write(tmp_path, "")
    with pytest.raises(InputError, match=r"the file has no rows") as ei:
        read_jsonl(p, QUESTION_ROW, key="dedup.input")
    assert str(ei.value).startswith(f"dedup.input={p}: ")
    p = write(tmp_path, "\n  \n", "blank.jsonl")
    with pytest.raises(InputError, match=r"the file has no rows"):
        read_jsonl(p, QUESTION_ROW)


def test_empty_file_without_schema(tmp_path):
    assert read_jsonl(write(tmp_path, "")) == []


def test_not_utf8(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes('{"question": "caf\u00e9?"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"not UTF-8 text") as ei:
        read_jsonl(p, QUESTION_ROW, key="dedup.input")
    assert str(ei.value).startswith(f"dedup.input={p}: ")


def test_response_helpers():
    assert response_text("#### 1") == "#### 1"
    assert response_text({"text": "#### 2", "finish_reason": "stop"}) == "#### 2"
    assert response_finished("anything")
    assert response_finished({"text": "x"})
    assert response_finished({"text": "x", "finish_reason": "stop"})
    assert not response_finished({"text": "x", "finish_reason": "length"})
