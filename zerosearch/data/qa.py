"""Loading and saving QA examples in the Search-R1 file layout.

Every example gets a uid that is unique within the loaded file even when the file's own `id` or
index repeats across data sources (NQ and HotpotQA rows both start at 0): GRPO groups rollouts by
this uid, and a collision would mix two questions into one group.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class QAExample:
    """One question with its gold answers; `meta` carries anything else the file had."""

    uid: str
    question: str
    golden_answers: list[str]
    data_source: str = ""
    meta: dict = field(default_factory=dict)


class QADataError(ValueError):
    """A row of a QA file lacks a field we need; the message names the file and line."""


def _as_answer_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _golden_answers(row: dict) -> list[str] | None:
    for key in ("golden_answers", "answers", "answer"):
        if key in row and row[key] is not None:
            return _as_answer_list(row[key])
    reward_model = row.get("reward_model")
    if isinstance(reward_model, dict):
        truth = reward_model.get("ground_truth")
        if isinstance(truth, dict) and truth.get("target") is not None:
            return _as_answer_list(truth["target"])
    return None


def _question(row: dict) -> str | None:
    question = row.get("question")
    if question is None and isinstance(row.get("extra_info"), dict):
        question = row["extra_info"].get("question")
    return None if question is None else str(question)


def _row_to_example(row: dict, row_number: int, where: str) -> QAExample:
    if not isinstance(row, dict):
        raise QADataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    question = _question(row)
    if question is None:
        raise QADataError(f"{where}: missing field 'question'")
    golds = _golden_answers(row)
    if golds is None:
        raise QADataError(
            f"{where}: missing answers (expected 'golden_answers', 'answers', 'answer' or "
            "'reward_model.ground_truth.target')"
        )
    if not any(g.strip() for g in golds):  # every answer would score 0: a broken row, not a hard question
        raise QADataError(f"{where}: no gold answer (the answers are {golds!r})")
    source = str(row.get("data_source", "") or "")
    known = ("uid", "question", "golden_answers", "data_source", "meta")
    meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
    meta.update({k: v for k, v in row.items() if k not in known})
    if row.get("uid") is not None:  # a file we wrote ourselves: keep its uids
        uid = str(row["uid"])
    else:
        index = row.get("id", row.get("index"))
        if index is None and isinstance(row.get("extra_info"), dict):
            index = row["extra_info"].get("index")
        uid = f"{source}:{row_number if index is None else index}:{row_number}"
    return QAExample(uid=uid, question=question, golden_answers=golds, data_source=source, meta=meta)


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise QADataError(f"{path}:{line}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def _read_rows(path: Path) -> list[tuple[dict, str]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for line_no, line in enumerate(_text(path).split("\n"), start=1):  # JSON may hold a raw U+2028
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                rows.append((json.loads(line), where))
            except json.JSONDecodeError as e:
                raise QADataError(f"{where}: invalid JSON ({e.msg})") from e
        return rows
    if suffix == ".json":
        try:
            data = json.loads(_text(path))
        except json.JSONDecodeError as e:
            raise QADataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
        if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise QADataError(f"{path}: expected a list of examples or a dict holding one list")
            data = lists[0]
        if not isinstance(data, list):
            raise QADataError(f"{path}: expected a list of examples, got {type(data).__name__}")
        return [(row, f"{path}: item {i}") for i, row in enumerate(data)]
    if suffix == ".parquet":
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError(f"reading {path} needs pandas and pyarrow: pip install pandas pyarrow") from e
        frame = pd.read_parquet(path)
        return [(row, f"{path}: row {i}") for i, row in enumerate(frame.to_dict(orient="records"))]
    raise QADataError(f"{path}: unsupported extension {suffix!r} (use .jsonl, .json or .parquet)")


def load_qa(path: str | os.PathLike) -> list[QAExample]:
    """Read a Search-R1 style QA file; uids are unique per row even if ids repeat."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"QA file not found: {path}")
    if path.is_dir():
        raise QADataError(f"{path} is a directory, not a QA file")
    examples = [_row_to_example(row, i, where) for i, (row, where) in enumerate(_read_rows(path))]
    if not examples:  # scoring or training on nothing would report zeros as if they were results
        raise QADataError(f"{path}: no questions (the file is empty or holds only blank lines)")
    seen: set[str] = set()
    for row_number, ex in enumerate(examples):  # uids copied from a file may still collide
        if ex.uid in seen:
            ex.uid = f"{ex.uid}:{row_number}"
        seen.add(ex.uid)
    return examples


def save_qa(examples: list[QAExample], path: str | os.PathLike) -> None:
    """Write jsonl atomically (temp file + os.replace) so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for ex in examples:
                row = asdict(ex)
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
