"""A search backend wrapper that keeps every (query, result) it served: how `zerosearch collect` reads the documents
a real engine returned inside the policy's rollouts without the rollout runner knowing about it."""

from __future__ import annotations

from collections import defaultdict

from .base import SearchBackend, SearchRequest, SearchResult


class RecordingSearch:
    """Serves through `backend` and records, per row id, the (query, result) pairs in the order they were asked.

    A call the backend raised on records nothing (the runner turns it into fallback results of its own), so a
    recorded result is always one the backend itself returned.
    """

    def __init__(self, backend: SearchBackend) -> None:
        self.backend = backend
        self._calls: dict[int | str, list[tuple[str, SearchResult]]] = defaultdict(list)

    def search(self, requests: list[SearchRequest], *, step: int = 0) -> list[SearchResult]:
        results = self.backend.search(requests, step=step)
        by_id = {r.row_id: r for r in results}
        for req in requests:
            if req.row_id in by_id:
                self._calls[req.row_id].append((req.query, by_id[req.row_id]))
        return results

    def stats(self) -> dict:
        return self.backend.stats()

    def take(self) -> dict[int | str, list[tuple[str, SearchResult]]]:
        """Everything recorded since the last `take`, by row id; the record starts empty again."""
        calls, self._calls = dict(self._calls), defaultdict(list)
        return calls
