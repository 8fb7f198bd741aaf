"""Naive RAG: the top-k passages BM25 finds for the question stand in front of the policy's first turn."""

from __future__ import annotations

from zerosearch.rollout import RolloutRunner
from zerosearch.rollout.protocol import format_documents, observation_text, policy_prompt
from zerosearch.search import BM25Search


class RAGRunner(RolloutRunner):
    """Rollouts whose prompt already holds the retrieved documents, in the `<information>` block a search would
    have returned, so a policy trained on the search format reads them where it expects them. The search backend
    must be the same BM25 engine (`search`), which also retrieves for the prompt."""

    search: BM25Search

    def prompt_ids(self, question: str) -> list[int]:
        hits = self.search.retrieve([question])[0]
        docs = format_documents([self.search.corpus[i] for i in hits])
        return self._encode(policy_prompt(question) + observation_text(docs))
