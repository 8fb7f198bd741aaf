"""The text protocol between policy, engine and simulator (DESIGN §1).

Every piece of code that writes or parses the tags takes them from here, so the rollout, the toy
warm-start data and the simulator can never disagree on the format.
"""

from __future__ import annotations

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

SIMULATOR_TEMPLATE = (
    "You are the Google search engine. Given a query, you need to generate five {kind} documents for the "
    "query. {hint}Each document should contain about {words} words, and these documents should contain "
    "{content}. Query: {query} {label} Output:"
)


def policy_prompt(question: str) -> str:
    """The user prompt that opens every rollout."""
    return POLICY_TEMPLATE.format(question=question.strip())


def observation_text(documents_text: str) -> str:
    """Engine-written text appended after a search (never trained on)."""
    return f"\n\n{INFO_OPEN}{documents_text}{INFO_CLOSE}\n\n"


def simulator_prompt(
    query: str,
    question: str,
    golden_answers: list[str],
    useful: bool,
    *,
    words: int = 30,
    answer_in_noisy: bool = False,
) -> str:
    """Useful/noisy instruction of DESIGN §1; the gold answer reaches the noisy prompt only if asked."""
    show_answer = useful or answer_in_noisy
    answer = ", ".join(golden_answers) if golden_answers else ""
    hint = (
        f'The user is trying to answer the question "{question}" whose answer is {answer}. '
        if show_answer and question
        else (f'The user is trying to answer the question "{question}". ' if question else "")
    )
    return SIMULATOR_TEMPLATE.format(
        kind="useful" if useful else "noisy",
        hint=hint,
        words=words,
        content="useful information for the query" if useful else "no useful information for the query",
        query=query.strip(),
        label="Useful" if useful else "Noisy",
    )


def format_documents(documents: list[str]) -> str:
    """`Doc 1: ...` lines, the layout the simulator is trained to write and parse_documents reads."""
    return "\n".join(f"Doc {i + 1}: {doc.strip()}" for i, doc in enumerate(documents))
