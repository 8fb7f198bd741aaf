"""QA loader: Search-R1 fields, unique uids across repeated ids, clear errors, round trip."""

import json

import pytest

from zerosearch.data import QAExample, load_qa, save_qa
from zerosearch.data.qa import QADataError


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_search_r1_fields_and_unique_uids(tmp_path):
    rows = [
        {"id": "0", "question": "who?", "golden_answers": ["a", "b"], "data_source": "nq"},
        {"id": "0", "question": "where?", "golden_answers": "c", "data_source": "hotpotqa"},
        {"id": "0", "question": "when?", "answer": "d", "data_source": "nq"},
        {"question": "why?", "data_source": "musique",
         "reward_model": {"ground_truth": {"target": ["e"]}}, "extra_info": {"index": 0}},
    ]  # fmt: skip
    path = tmp_path / "qa.jsonl"
    _write_jsonl(path, rows)
    examples = load_qa(path)
    assert [e.golden_answers for e in examples] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [e.data_source for e in examples] == ["nq", "hotpotqa", "nq", "musique"]
    assert len({e.uid for e in examples}) == len(examples)


def test_json_list(tmp_path):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([{"question": "q", "answers": ["x"]}] * 3))
    examples = load_qa(path)
    assert len({e.uid for e in examples}) == 3 and examples[0].golden_answers == ["x"]


def test_missing_field_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, [{"question": "q", "golden_answers": ["a"]}, {"question": "no answer"}])
    with pytest.raises(QADataError, match=r"bad\.jsonl:2.*answers"):
        load_qa(path)
    _write_jsonl(path, [{"golden_answers": ["a"]}])
    with pytest.raises(QADataError, match=r"bad\.jsonl:1.*question"):
        load_qa(path)


def test_save_load_round_trip(tmp_path):
    examples = [
        QAExample("nq:0:0", "who?", ["a"], "nq", {"hops": 1}),
        QAExample("nq:0:1", "what?", ["b", "c"], "nq", {}),
    ]
    path = tmp_path / "sub" / "out.jsonl"
    save_qa(examples, path)
    assert load_qa(path) == examples
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]  # no temp file left


def test_parquet_without_pandas_is_clear(tmp_path):
    try:
        import pandas  # noqa: F401
    except ImportError:
        path = tmp_path / "x.parquet"
        path.write_bytes(b"")
        with pytest.raises(ImportError, match="pandas"):
            load_qa(path)
    else:
        pytest.skip("pandas is installed; only the error path is tested here")


@pytest.mark.parametrize("content", ["", "\n\n  \n", "[]"], ids=["empty", "blank lines", "empty json list"])
def test_a_file_without_questions_is_an_error(tmp_path, content):
    """Training or scoring nothing would report zeros as results; the error names the file."""
    path = tmp_path / ("qa.json" if content == "[]" else "qa.jsonl")
    path.write_text(content)
    with pytest.raises(QADataError, match=rf"{path.name}: no questions"):
        load_qa(path)


@pytest.mark.parametrize("answers", [[], [""], ["  ", ""]])
def test_a_row_without_a_gold_answer_names_the_row(tmp_path, answers):
    """Such a row is scored 0 whatever the policy says; it is a broken row, not a hard question."""
    path = tmp_path / "qa.jsonl"
    _write_jsonl(path, [{"question": "q1", "golden_answers": ["a"]}, {"question": "q2", "golden_answers": answers}])
    with pytest.raises(QADataError, match=r"qa\.jsonl:2: no gold answer"):
        load_qa(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_non_utf8_file_names_the_file_and_line(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    rows = [{"question": "q", "golden_answers": ["a"]}, {"question": "café", "golden_answers": ["b"]}]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) if suffix == ".jsonl" else json.dumps(
        rows, ensure_ascii=False, indent=0)
    path.write_bytes(text.encode("latin-1"))  # "é" as the single byte 0xe9
    line = text[: text.index("é")].count("\n") + 1
    with pytest.raises(QADataError, match=rf"latin1\{suffix}:{line}: not UTF-8"):
        load_qa(path)


def test_a_directory_is_not_a_qa_file(tmp_path):
    with pytest.raises(QADataError, match="is a directory"):
        load_qa(tmp_path)
