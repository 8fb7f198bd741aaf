"""zerosearch: train LLMs to search with RL against a simulated search engine (ZeroSearch)."""

__version__ = "0.1.0"
