"""The text protocol between policy, engine and simulator: tags, prompt templates, observation text.

Every piece of code that writes or parses the tags takes them from here, so the rollout, the toy
warm-start data and the simulator can never disagree on the format (the simulator's own prompt and
the `Doc i:` document layout live in :mod:`zerosearch.search`). The templates follow the ZeroSearch /
Search-R1 public prompts (docs/ARCHITECTURE.md, "The method").
"""

from __future__ import annotations

from zerosearch.search.documents import format_documents

__all__ = ["TAGS", "TagIds", "format_documents", "observation_text", "policy_prompt"]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
INFO_OPEN, INFO_CLOSE = "<information>", "</information>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, SEARCH_OPEN, SEARCH_CLOSE, INFO_OPEN, INFO_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

POLICY_TEMPLATE = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time "
    "you get new information. After reasoning, if you find you lack some knowledge, you can call a search "
    "engine by <search> query </search>, and it will return the top searched results between "
    "<information> and </information>. You can search as many times as you want. If you find no further "
    "external knowledge needed, you can directly provide the answer inside <answer> and </answer> without "
    "detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)

INVALID_ACTION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
    "</search>. If I want to give the final answer, I should put the answer between <answer> and "
    "</answer>. Let me try again.\n"
)

FINAL_TURN_HINT = "\nI have used all my searches. I must give the final answer now. <answer>"

def policy_prompt(question: str) -> str:
    """The user prompt that opens every rollout."""
    return POLICY_TEMPLATE.format(question=question.strip())


def observation_text(documents_text: str) -> str:
    """Engine-written text appended after a search (never trained on)."""
    return f"\n\n{INFO_OPEN}{documents_text}{INFO_CLOSE}\n\n"


class TagIds:
    """Single token ids of the protocol tags in a tokenizer (checked: each tag must be one token)."""

    def __init__(self, tokenizer) -> None:
        ids = {}
        for tag in TAGS:
            enc = tokenizer.encode(tag, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(
                    f"tag {tag!r} is {len(enc)} tokens in this tokenizer; add the tags as single tokens "
                    "(tokenizer.add_tokens) before training"
                )
            ids[tag] = enc[0]
        self.search_open = ids[SEARCH_OPEN]
        self.search_close = ids[SEARCH_CLOSE]
        self.answer_close = ids[ANSWER_CLOSE]
        self.info_open = ids[INFO_OPEN]
        self.info_close = ids[INFO_CLOSE]
