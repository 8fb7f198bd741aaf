"""The test sets `data.test_path` names: a QA file, a comma-separated list, or directories of Search-R1 files."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from zerosearch.data.qa import QAExample, load_qa

QA_SUFFIXES = (".jsonl", ".json", ".parquet")
SPLIT_NAMES = {"test", "dev", "val", "validation", "train"}


def qa_files(spec: str) -> list[Path]:
    """The QA files named by `data.test_path`: a file, a comma-separated list, or directories of them.

    A directory is searched two levels deep, so both the flat Search-R1 layout (`test/nq.jsonl`) and the
    per-dataset one (`test/nq/test.parquet`) work; files are returned in sorted order.
    """
    files: list[Path] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        path = Path(part)
        if path.is_dir():
            found = sorted(f for pattern in ("*", "*/*") for f in path.glob(pattern)
                           if f.is_file() and f.suffix.lower() in QA_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no {'/'.join(QA_SUFFIXES)} files under {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"test set not found: {path}")
    if not files:
        raise ValueError("data.test_path is empty")
    return files


def source_name(path: Path) -> str:
    """Dataset name for rows without `data_source`: the file stem, or its folder for `nq/test.jsonl`."""
    return path.parent.name if path.stem.lower() in SPLIT_NAMES else path.stem


def load_test_sets(spec: str, *, max_per_source: int = 0) -> list[QAExample]:
    """Every test row of every file in `spec`, each tagged with its dataset; uids unique across files.

    `max_per_source` (0 = all) caps each dataset separately, so a quick run still covers every dataset.
    """
    examples: list[QAExample] = []
    seen: set[str] = set()
    counts: dict[str, int] = defaultdict(int)
    for path in qa_files(spec):
        for ex in load_qa(path):
            ex.data_source = ex.data_source or source_name(path)
            if max_per_source and counts[ex.data_source] >= max_per_source:
                continue
            counts[ex.data_source] += 1
            if ex.uid in seen:
                ex.uid = f"{path}:{ex.uid}"
            seen.add(ex.uid)
            examples.append(ex)
    return examples
