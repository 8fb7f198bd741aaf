"""Multi-turn rollouts of the policy against a search backend, on token ids, with one per-token loss mask."""

from zerosearch.rollout.runner import RolloutRunner, query_text
from zerosearch.rollout.trajectory import Trajectory, policy_text, score_trajectories

__all__ = ["RolloutRunner", "Trajectory", "policy_text", "query_text", "score_trajectories"]
