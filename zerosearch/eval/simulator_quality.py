"""How good a simulator is to train against, measured on held-out (query, real documents, label) pairs.

For every pair the simulator is asked once for useful and once for noisy documents (the same prompts RL sends):

* **useful recall**: share of useful answers whose documents contain a gold answer (cover-EM over documents);
* **noisy leak rate**: the same share for noisy answers (lower is better; the curriculum relies on it);
* **format validity**: share of answers that parse into exactly `top_k` `Doc i:` documents;
* **mean length**: words per answer (all documents together);
* **agreement**: share of pairs where the simulator, prompted with the real engine's label (the pair's `useful`),
  contains a gold answer exactly when that label says useful.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zerosearch.search import SearchRequest
from zerosearch.search.documents import contains_answer


def simulator_quality(useful_search, noisy_search, pairs: list, *, top_k: int,
                      batch_size: int = 64) -> dict[str, Any]:
    """`useful_search` / `noisy_search` answer every request usefully / noisily (a `SimulatorSearch` with the
    noise probability at 0 / 1). `pairs` have query, question, golden_answers, documents (the real engine's) and
    useful (the label the real engine's documents got when the pairs were collected and labelled)."""
    if not pairs:
        raise ValueError("simulator evaluation needs at least one pair")
    docs: dict[str, list[list[str]]] = {"useful": [], "noisy": []}
    valid: dict[str, list[bool]] = {"useful": [], "noisy": []}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        reqs = [SearchRequest(start + i, p.query, p.question, list(p.golden_answers)) for i, p in enumerate(chunk)]
        for kind, search in (("useful", useful_search), ("noisy", noisy_search)):
            for res in search.search(reqs):
                docs[kind].append(res.documents)
                valid[kind].append(not res.fallback and len(res.documents) == top_k)
    hit = {k: [contains_answer(d, p.golden_answers) for d, p in zip(v, pairs)] for k, v in docs.items()}
    real = [bool(p.useful) for p in pairs]
    agree = [(hit["useful"][i] if r else hit["noisy"][i]) == r for i, r in enumerate(real)]
    words = [len(" ".join(d).split()) for k in docs for d in docs[k]]
    return {
        "n": len(pairs),
        "useful_recall": float(np.mean(hit["useful"])),
        "noisy_leak_rate": float(np.mean(hit["noisy"])),
        "format_validity": float(np.mean(valid["useful"] + valid["noisy"])),
        "mean_words": float(np.mean(words)),
        "agreement": float(np.mean(agree)),
        "real_useful_share": float(np.mean(real)),
    }


def format_quality_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per simulator (name → `simulator_quality` result)."""
    keys = ("useful_recall", "noisy_leak_rate", "format_validity", "mean_words", "agreement")
    head = f"{'simulator':<24}{'n':>6}" + "".join(f"{k:>17}" for k in keys)
    lines = [head]
    for name, r in results.items():
        lines.append(f"{name:<24}{r['n']:>6}" + "".join(f"{r[k]:>17.3f}" for k in keys))
    return "\n".join(lines)
