"""Labelled simulator pairs on the toy world with known labels, for tests that need pairs without running a policy.

Useful: the real results for a question's needed query. Noisy: the real results for the same relation about another
entity of the same kind, shown under the needed query. The label is the truth: useful iff the needed entity's passage
is among the documents.
"""

from __future__ import annotations

import random

from zerosearch.rl.sft import SimulatorPair
from zerosearch.toy.world import query_for


def oracle_pairs(world, bm25, examples, rng: random.Random) -> list[SimulatorPair]:
    names = [e.name for e in world.entities]
    by_kind: dict[str, list[str]] = {}
    for e in world.entities:
        by_kind.setdefault(e.kind, []).append(e.name)
    kind = {e.name: e.kind for e in world.entities}
    pairs = []
    for ex in examples:
        for query, relation, name in zip(ex.meta["needed_queries"], ex.meta["relations"], ex.meta["entities"]):
            needed = world.passages[names.index(name)]
            other = rng.choice([n for n in by_kind[kind[name]] if n != name])
            for q in (query, query_for(relation, other)):
                docs = [bm25.corpus[i] for i in bm25.retrieve([q])[0]]
                pairs.append(SimulatorPair(query, ex.question, list(ex.golden_answers), docs, needed in docs))
    return pairs
