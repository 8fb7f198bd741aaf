"""The simulator's prompt: "You are the Google search engine ... five useful (noisy) documents ...".

Useful prompts show the question and its gold answer (the simulator is asked to help); noisy prompts show
the question only, unless ``answer_in_noisy`` is set (showing the answer makes it likely to leak into
documents that are supposed to be useless).
"""

from __future__ import annotations

__all__ = ["SIMULATOR_TEMPLATE", "simulator_prompt"]

SIMULATOR_TEMPLATE = (
    "You are the Google search engine. Given a query, you need to generate five {kind} documents for the "
    "query. {hint}Each document should contain about {words} words, and these documents should contain "
    "{content}. Query: {query} {label} Output:"
)


def simulator_prompt(
    query: str,
    question: str,
    golden_answers: list[str],
    useful: bool,
    *,
    words: int = 30,
    answer_in_noisy: bool = False,
) -> str:
    """The useful / noisy instruction for one query; the gold answer reaches a noisy prompt only if asked."""
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
