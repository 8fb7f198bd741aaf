"""One rollout as token ids with its per-token loss mask, and what the policy wrote in it."""

from __future__ import annotations

from dataclasses import dataclass, field

from zerosearch.data.qa import QAExample
from zerosearch.reward import score_response


@dataclass
class Trajectory:
    """One rollout. `response_ids` holds policy and engine tokens after the prompt, in order."""

    row_id: int
    example: QAExample
    group_id: str
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[bool] = field(default_factory=list)
    sample_logprobs: list[float] = field(default_factory=list)  # 0.0 at engine tokens
    queries: list[str] = field(default_factory=list)
    noisy: list[bool] = field(default_factory=list)
    fallbacks: int = 0
    invalid_actions: int = 0
    finished: bool = False  # wrote a complete <answer>
    truncated: bool = False  # hit the context limit
    response_text: str = ""

    @property
    def n_searches(self) -> int:
        return len(self.queries)

    def extend(self, ids: list[int], *, policy: bool, logprobs: list[float] | None = None) -> None:
        self.response_ids.extend(ids)
        self.loss_mask.extend([policy] * len(ids))
        self.sample_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


def policy_text(traj: Trajectory, tokenizer) -> str:
    """Only what the policy wrote: the answer is never read from prompts or search results."""
    ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
    return tokenizer.decode(ids, skip_special_tokens=False)


def score_trajectories(trajs: list[Trajectory], tokenizer) -> list[dict[str, float]]:
    """f1 / em / cover_em / has_answer of each trajectory's final answer against its gold answers."""
    return [score_response(policy_text(t, tokenizer), t.example.golden_answers) for t in trajs]
