"""Answer extraction and QA scores.

The scores follow the SQuAD conventions so the numbers are comparable with the published tables:
answers are normalised (lowercase, no punctuation, no articles, single spaces) before comparison, and
every score is the best over the gold answers. A rollout without an answer scores 0 — it must never
crash the trainer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# A well-formed answer span: an opening tag, then text containing no answer tag, then a closing tag.
# Whitespace inside the tags and upper case are tolerated because small policies produce both.
_OPEN = r"<\s*answer\s*>"
_CLOSE = r"<\s*/\s*answer\s*>"
_ANSWER_SPAN = re.compile(rf"{_OPEN}((?:(?!{_OPEN}|{_CLOSE}).)*?){_CLOSE}", flags=re.IGNORECASE | re.DOTALL)

Golds = str | Sequence[str]


def _as_list(golds: Golds | None) -> list[str]:
    if golds is None:
        return []
    if isinstance(golds, str):
        return [golds]
    return [str(g) for g in golds]


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str | None, golds: Golds) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _as_list(golds)))


def cover_exact_match(prediction: str | None, golds: Golds) -> float:
    """1.0 when some normalised gold answer is a substring of the normalised prediction.

    This is the metric the public ZeroSearch / Search-R1 tables report as "EM". An empty gold never
    counts as covered (it would be a substring of everything).
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    for g in _as_list(golds):
        gold = normalize_answer(g)
        if gold and gold in pred:
            return 1.0
    return 0.0


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golds: Golds) -> float:
    """Max over gold answers of the SQuAD bag-of-tokens F1 between normalised strings."""
    if prediction is None:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for g in _as_list(golds):
        best = max(best, _token_f1(pred_tokens, normalize_answer(g).split()))
    return best


def extract_answer(response: str | None) -> str | None:
    """Content (stripped) of the last well-formed `<answer>…</answer>` in `response`, else None.

    Pass only the policy's response, not the prompt: the prompt's own example answer would otherwise
    be scored. A span containing another answer tag is not well-formed, so `<answer> a <answer> b
    </answer>` gives "b".
    """
    if not response:
        return None
    last = None
    for match in _ANSWER_SPAN.finditer(response):
        last = match
    return None if last is None else last.group(1).strip()


def score_response(response: str | None, golds: Golds) -> dict[str, float]:
    """f1 / em / cover_em of the response's answer, plus has_answer; all zeros without an answer."""
    answer = extract_answer(response)
    return {
        "f1": f1_score(answer, golds),
        "em": exact_match(answer, golds),
        "cover_em": cover_exact_match(answer, golds),
        "has_answer": float(answer is not None),
    }
