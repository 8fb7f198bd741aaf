"""Request/result types and the protocol every search backend follows.

Each request carries its own row id and its own question/answers, and each result carries the id
back: a backend can never answer one row with another row's context when rows finish at different turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Returned (never searched) for an empty query: backends are not called with empty strings.
EMPTY_QUERY_DOCS = (
    "The search query was empty, so no documents were retrieved. Write a query between <search> and </search>."
)
# Returned when the backend failed (server down, timeouts, garbage); the result has fallback=True.
UNAVAILABLE_DOCS = "The search engine is temporarily unavailable, so no documents were retrieved."


@dataclass
class SearchRequest:
    """One query of one rollout row; question/golden_answers feed the simulator's prompt."""

    row_id: int | str
    query: str
    question: str = ""
    golden_answers: list[str] = field(default_factory=list)


@dataclass
class SearchResult:
    """Documents for one request; `noisy` is None for real engines, `fallback` marks a failure."""

    row_id: int | str
    documents: list[str]
    noisy: bool | None = None
    fallback: bool = False
    error: str | None = None


@runtime_checkable
class SearchBackend(Protocol):
    """A batched search engine: results come back in request order, each with its request's row_id."""

    def search(self, requests: list[SearchRequest], *, step: int = 0) -> list[SearchResult]: ...

    def stats(self) -> dict: ...


def clean_query(q: str | None, max_chars: int = 512) -> str:
    """Strip, collapse whitespace and truncate a policy-written query; "" when nothing is left."""
    if not q:
        return ""
    return " ".join(str(q).split())[:max_chars].strip()


def empty_query_result(row_id: int | str) -> SearchResult:
    """The fixed answer to an empty query (not a fallback: nothing failed, there was nothing to do)."""
    return SearchResult(row_id=row_id, documents=[EMPTY_QUERY_DOCS], error="empty query")


def unavailable_result(row_id: int | str, error: str, noisy: bool | None = None) -> SearchResult:
    """The fixed answer when the backend failed for this request."""
    return SearchResult(row_id=row_id, documents=[UNAVAILABLE_DOCS], noisy=noisy, fallback=True, error=error)
