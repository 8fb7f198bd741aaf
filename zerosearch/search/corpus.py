"""The local corpus file every real search engine indexes (Search-R1 layout)."""

from __future__ import annotations

import json
from pathlib import Path


def load_corpus_jsonl(path: str | Path) -> tuple[list[str], list[str]]:
    """(ids, passages) of a Search-R1 style corpus: one `{"id": ..., "contents": ...}` object per line.

    Every local real engine (BM25, dense) reads its corpus here, so they index the same passages with the same ids.
    """
    ids: list[str] = []
    docs: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            ids.append(str(row.get("id", len(ids))))
            docs.append(str(row["contents"]))
    return ids, docs
