"""The crash-safe JSON-lines helpers that metrics and eval results share."""

import json

from zerosearch.runtime.jsonl import append_jsonl, read_jsonl, write_jsonl_atomic


def test_read_skips_torn_and_non_object_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert read_jsonl(path) == ([], 0)  # a file not written yet
    rows = [{"uid": "a", "f1": 0.5}, {"uid": "b", "nested": {"x": [1, 2]}}]
    append_jsonl(path, rows[:1])
    append_jsonl(path, rows[1:])
    with open(path, "a") as f:
        f.write("\n[1, 2]\n")  # valid JSON, but not a row
        f.write('{"uid": "c", "f1"')  # torn by a killed writer
    assert read_jsonl(path) == (rows, 2)


def test_atomic_write_replaces_in_one_step(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"old": 1}\n')
    rows = [{"uid": str(i)} for i in range(3)]
    write_jsonl_atomic(path, rows)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]  # no temporary file left behind
