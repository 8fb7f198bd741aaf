"""The `Doc i:` layout of search results: how documents are written into the policy's context and the
simulator's training targets, and how a simulator's completion is split back into documents."""

from __future__ import annotations

import re

from zerosearch.reward import normalize_answer

__all__ = ["contains_answer", "format_documents", "parse_documents"]


def format_documents(documents: list[str]) -> str:
    """`Doc 1: ...` lines, the layout the simulator is trained to write and parse_documents reads."""
    return "\n".join(f"Doc {i + 1}: {doc.strip()}" for i, doc in enumerate(documents))


# "Doc 3:", "doc 3 -", "Document 3.", "Doc:" — the number and the exact separator are optional-ish.
_DOC_MARK = re.compile(r"\bdoc(?:ument)?\s*(?:\d+\s*[:.)\-]|:)", flags=re.IGNORECASE)


def parse_documents(text: str, k: int = 5) -> list[str]:
    """Split a simulator completion at its `Doc i:` markers into at most k non-empty documents.

    Text before the first marker is preamble and dropped. With no marker at all the whole
    (non-empty) text is one document, so a sloppy small simulator still returns something.
    """
    if not text or not text.strip():
        return []
    marks = list(_DOC_MARK.finditer(text))
    if not marks:
        return [" ".join(text.split())]
    docs = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        doc = " ".join(text[m.end() : end].split())
        if doc:
            docs.append(doc)
        if len(docs) == k:
            break
    if not docs:
        return []
    return docs


def contains_answer(documents: list[str], golds: list[str]) -> bool:
    """Whether some normalised gold answer occurs as whole words in the normalised documents."""
    text = f" {normalize_answer(' '.join(documents))} "
    for g in golds:
        gold = normalize_answer(g)
        if gold and f" {gold} " in text:
            return True
    return False
