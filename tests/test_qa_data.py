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
