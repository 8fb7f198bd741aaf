"""Useful/noisy labels for collected rows, and balanced classes: the pairs `zerosearch sft` trains the simulator on.

Three rules (`collect.label_rule`):

* `cover_em`: the documents contain a gold answer (normalised, whole words). Cheap and exact, but blind to
  multi-hop questions: the documents of a first hop name the bridge entity, not the answer, and count as noisy.
* `outcome`: the rollout the query came from ended with a right answer (exact match), the paper's first rule:
  everything a successful trajectory retrieved is useful, everything a failed one retrieved is noisy.
* `judge`: an LLM judge (`LLMJudge`) reads the question, answer, query and documents, the paper's later rule.
  Rows it never labels are dropped and counted, never guessed.

A pair is a collected row plus `useful` and `label_rule`.

**Mined negatives** (`collect.negatives`). In collected data, whether documents are useful is decided by the query:
a good query gets useful documents, a bad one noisy ones. A simulator can then fit query → documents and ignore the
instruction, and asked for noisy documents about a good query it writes the useful ones (a high noisy leak rate in
`simulate --eval`). A mined negative is a useful pair's prompt with the documents the engine returned for another
question's query, the one sharing the most words with it, checked to hold none of its gold answers: the same query
under both instructions, so only the instruction tells them apart.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from zerosearch.config import LABEL_RULES
from zerosearch.reward import normalize_answer
from zerosearch.rl.sft import balance_pairs
from zerosearch.search.documents import contains_answer


def _rule_labels(rows: list[dict[str, Any]], rule: str, judge) -> list[bool | None]:
    if rule == "cover_em":
        return [contains_answer(r["documents"], r["golden_answers"]) for r in rows]
    if rule == "outcome":
        return [float(r["trajectory_em"]) > 0 for r in rows]
    if rule == "judge":
        if judge is None:
            raise ValueError("label_rule=judge needs a judge (collect.judge_url)")
        return judge.label(rows)
    raise ValueError(f"collect.label_rule must be one of {', '.join(LABEL_RULES)}, not {rule!r}")


def label_rows(rows: list[dict[str, Any]], rule: str, *, judge=None) -> tuple[list[dict[str, Any]], int]:
    """(pairs, unlabelled): the rows that got a label, each with `useful` and `label_rule`; the number dropped."""
    labels = _rule_labels(rows, rule, judge)
    pairs = [r | {"useful": bool(y), "label_rule": rule} for r, y in zip(rows, labels) if y is not None]
    return pairs, len(rows) - len(pairs)


def _question_of(pair: dict[str, Any]) -> str:
    return str(pair.get("uid", "")).rsplit("/", 2)[0] or pair["question"]


def mined_negatives(pairs: list[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """Up to `k` noisy pairs per useful pair (see the module docstring); the donors are all `pairs`."""
    if k <= 0 or not pairs:
        return []
    rng = random.Random(seed)
    words = [set(normalize_answer(p["query"]).split()) for p in pairs]
    postings: dict[str, list[int]] = defaultdict(list)
    for i, ws in enumerate(words):
        for w in ws:
            postings[w].append(i)
    cap = 256  # a word shared with more rows than this contributes a random sample of them (bounded cost)
    out = []
    for i, p in enumerate(pairs):
        if not p["useful"]:
            continue
        shared: Counter = Counter(j for w in sorted(words[i]) for j in (
            postings[w] if len(postings[w]) <= cap else rng.sample(postings[w], cap)))
        own = _question_of(p)
        ranked = list(shared)
        rng.shuffle(ranked)  # ties broken at random, reproducibly
        ranked.sort(key=lambda j: -shared[j])
        donors = (j for j in ranked if _question_of(pairs[j]) != own
                  and not contains_answer(pairs[j]["documents"], p["golden_answers"]))
        for n, j in zip(range(k), donors):
            out.append(p | {"uid": f"{p['uid']}/neg{n}", "documents": list(pairs[j]["documents"]), "useful": False,
                            "negative_from": pairs[j].get("uid", "")})
    return out


def balance(pairs: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Equal numbers of useful and noisy pairs, shuffled. The larger class is subsampled; mined negatives fill the
    noisy class first (they are the contrast that teaches the instruction), then the collected noisy rows."""
    mined = [p for p in pairs if "negative_from" in p]
    if not mined:
        return balance_pairs(pairs, seed=seed, label=lambda p: p["useful"])
    rng = random.Random(seed)
    useful = [p for p in pairs if p["useful"]]
    natural = [p for p in pairs if not p["useful"] and "negative_from" not in p]
    n = min(len(useful), len(mined) + len(natural))
    from_mined = min(n, len(mined))
    out = rng.sample(useful, n) + rng.sample(mined, from_mined) + rng.sample(natural, n - from_mined)
    rng.shuffle(out)
    return out


def label_stats(pairs: list[dict[str, Any]], unlabelled: int, balanced: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Counts per class overall and per data source (mined negatives included), before and after balancing."""
    per_source: dict[str, Counter] = {}
    for p in pairs:
        per_source.setdefault(p.get("data_source", "default"), Counter())["useful" if p["useful"] else "noisy"] += 1
    useful = sum(p["useful"] for p in pairs)
    out: dict[str, Any] = {"labelled": len(pairs), "useful": useful, "noisy": len(pairs) - useful,
                           "unlabelled_dropped": unlabelled,
                           "mined_negatives": sum("negative_from" in p for p in pairs),
                           "per_source": {s: {"useful": c["useful"], "noisy": c["noisy"]}
                                          for s, c in sorted(per_source.items())}}
    if balanced is not None:
        out["balanced"] = len(balanced)
    return out


def format_label_stats(stats: dict[str, Any]) -> str:
    lines = [f"{'data source':<20}{'useful':>8}{'noisy':>8}{'useful %':>10}"]
    rows = [*stats["per_source"].items(), ("all", {"useful": stats["useful"], "noisy": stats["noisy"]})]
    for name, c in rows:
        n = c["useful"] + c["noisy"]
        lines.append(f"{name:<20}{c['useful']:>8}{c['noisy']:>8}{100 * c['useful'] / max(n, 1):>9.1f}%")
    lines.append(f"unlabelled (dropped): {stats['unlabelled_dropped']}; mined negatives among the noisy: "
                 f"{stats['mined_negatives']}")
    if "balanced" in stats:
        lines.append(f"after balancing: {stats['balanced']} pairs ({stats['balanced'] // 2} per class)")
    return "\n".join(lines)
