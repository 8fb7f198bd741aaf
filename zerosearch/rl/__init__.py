"""Reinforcement learning: the trainer, advantages, the policy-gradient math, the training forward, SFT.

Submodules are imported where used (``zerosearch.rl.trainer`` pulls in models and search; the math modules
``advantages`` and ``pg_loss`` depend on torch alone)."""
