"""A seeded, invented knowledge base: entities, one passage each, single- and two-hop questions.

Why invented: the tiny models start from nothing, and questions about made-up entities can only be
answered by retrieving their passages, so a rising reward really measures learning to search. All
text is lowercase with punctuation as separate words, so the word-level toy tokenizer round-trips
it exactly. Every question records the queries that retrieve the passages it needs (`meta`), which
the warm-start trajectories and the tests use.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zerosearch.data.qa import QAExample

KINDS = ("country", "city", "person", "company")
# Share of the entities per kind; there must be more cities than countries (every country needs
# one for its capital).
KIND_SHARES = {"country": 0.10, "city": 0.30, "person": 0.35, "company": 0.25}

OCCUPATIONS = (
    "painter", "farmer", "sailor", "doctor", "baker", "poet", "judge", "miner", "weaver", "singer",
    "teacher", "pilot", "potter", "carpenter", "banker", "chemist",
)  # fmt: skip
PRODUCTS = (
    "shoes", "bread", "ships", "lamps", "radios", "tea", "glass", "paper", "bicycles", "clocks", "soap",
    "rope", "cheese", "bricks", "maps", "violins",
)  # fmt: skip
BIRTH_YEARS = (1850, 2000)  # half-open range

_ONSETS = (
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "pl",
    "st", "tr", "th", "sh", "ch",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "k", "x")

# Words of the toy language that names must never equal (they would make passages ambiguous).
_RESERVED = set(OCCUPATIONS) | set(PRODUCTS) | set(KINDS) | {
    "the", "a", "an", "is", "in", "of", "was", "born", "by", "river", "flows", "through", "capital",
    "currency", "founded", "makes", "works", "as", "headquarters", "birthplace", "year", "founder",
    "country", "where", "which", "what", "who", "does", "make", "occupation", "product", "used", "that",
    "contains", "answer", "question", "search", "doc", "query", "think", "need", "find",
}  # fmt: skip


@dataclass
class Entity:
    """One knowledge-base entry; `attrs` values are plain words or other entities' names."""

    name: str
    kind: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class ToyWorld:
    """The generated world; `passages[i]` describes `entities[i]`."""

    seed: int
    entities: list[Entity]
    passages: list[str]
    train: list[QAExample]
    test: list[QAExample]

    def entity(self, name: str) -> Entity:
        """Look an entity up by name."""
        for ent in self.entities:
            if ent.name == name:
                return ent
        raise KeyError(name)

    def texts(self) -> list[str]:
        """Every text the world can put in front of a model (for building the vocabulary)."""
        out = list(self.passages)
        for ex in self.train + self.test:
            out.append(ex.question)
            out.extend(ex.golden_answers)
            out.extend(ex.meta.get("needed_queries", []))
            out.extend(ex.meta.get("needed_facts", []))
        return out

    def to_json(self) -> str:
        """Serialise everything (entities, passages, questions) as one JSON document."""
        return json.dumps(
            {
                "seed": self.seed,
                "entities": [asdict(e) for e in self.entities],
                "passages": self.passages,
                "train": [asdict(e) for e in self.train],
                "test": [asdict(e) for e in self.test],
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> ToyWorld:
        """Inverse of `to_json`."""
        data = json.loads(text)
        return cls(
            seed=int(data["seed"]),
            entities=[Entity(**e) for e in data["entities"]],
            passages=list(data["passages"]),
            train=[QAExample(**e) for e in data["train"]],
            test=[QAExample(**e) for e in data["test"]],
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ToyWorld:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _make_names(rng: random.Random, count: int) -> list[str]:
    """`count` distinct pronounceable words of 2-3 syllables, none equal to a toy-language word."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        n_syllables = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n_syllables))
        word += rng.choice(_CODAS)
        if len(word) < 4 or word in seen or word in _RESERVED:
            continue
        seen.add(word)
        names.append(word)
    return names


def _kind_counts(n_entities: int) -> dict[str, int]:
    counts = {k: max(2, int(n_entities * share)) for k, share in KIND_SHARES.items()}
    counts["person"] += n_entities - sum(counts.values())  # remainder goes to people
    if counts["city"] < counts["country"] or counts["person"] < 1:
        raise ValueError(f"n_entities={n_entities} is too small for a toy world")
    return counts


def _make_entities(rng: random.Random, n_entities: int) -> tuple[list[Entity], dict[str, list[str]]]:
    counts = _kind_counts(n_entities)
    n_cities = counts["city"]
    # entity names + currencies (one per country) + rivers (one per city), all distinct
    pool = _make_names(rng, n_entities + counts["country"] + n_cities)
    by_kind: dict[str, list[str]] = {}
    start = 0
    for kind in KINDS:
        by_kind[kind] = pool[start : start + counts[kind]]
        start += counts[kind]
    currencies = pool[start : start + counts["country"]]
    rivers = pool[start + counts["country"] :]

    countries, cities = by_kind["country"], by_kind["city"]
    # every country owns at least one city; the first city of each country is its capital
    shuffled = list(cities)
    rng.shuffle(shuffled)
    city_country = {c: countries[i % len(countries)] for i, c in enumerate(shuffled)}
    capital: dict[str, str] = {}
    for c in shuffled:
        capital.setdefault(city_country[c], c)

    ents: dict[str, Entity] = {}
    for i, name in enumerate(countries):
        ents[name] = Entity(name, "country", {"capital": capital[name], "currency": currencies[i]})
    for i, name in enumerate(cities):
        ents[name] = Entity(name, "city", {"country": city_country[name], "river": rivers[i]})
    for name in by_kind["person"]:
        ents[name] = Entity(
            name,
            "person",
            {
                "birthplace": rng.choice(cities),
                "birth year": str(rng.randrange(*BIRTH_YEARS)),
                "occupation": rng.choice(OCCUPATIONS),
            },
        )
    for name in by_kind["company"]:
        ents[name] = Entity(
            name,
            "company",
            {
                "founder": rng.choice(by_kind["person"]),
                "headquarters": rng.choice(cities),
                "product": rng.choice(PRODUCTS),
            },
        )
    order = list(ents)
    rng.shuffle(order)
    return [ents[n] for n in order], by_kind


def fact(relation: str, name: str, value: str) -> str:
    """One sentence stating an attribute, worded exactly like the fact a search trajectory looks for
    ("the founder of x is y"), so reading the answer off a document is a copy after a matching prefix."""
    return f"the {relation} of {name} is {value} ."


def passage(entity: Entity, capital_of: str | None = None) -> str:
    """The single passage that states every attribute of `entity`, one sentence per attribute."""
    sentences = [f"{entity.name} is a {entity.kind} ."]
    sentences += [fact(rel, entity.name, value) for rel, value in entity.attrs.items()]
    if capital_of:
        sentences.append(f"{entity.name} is the capital of {capital_of} .")
    return " ".join(sentences)


# (kind, relation) -> single-hop question template
SINGLE_HOP = {
    ("country", "capital"): "what is the capital of {x} ?",
    ("country", "currency"): "what is the currency of {x} ?",
    ("city", "country"): "in which country is {x} ?",
    ("city", "river"): "which river flows through {x} ?",
    ("person", "birthplace"): "where was {x} born ?",
    ("person", "birth year"): "in which year was {x} born ?",
    ("person", "occupation"): "what is the occupation of {x} ?",
    ("company", "founder"): "who founded {x} ?",
    ("company", "headquarters"): "where is the headquarters of {x} ?",
    ("company", "product"): "what does {x} make ?",
}
# (kind, first relation, second relation) -> two-hop question template
TWO_HOP = {
    ("person", "birthplace", "country"): "in which country was {x} born ?",
    ("person", "birthplace", "river"): "which river flows through the birthplace of {x} ?",
    ("company", "founder", "birth year"): "in which year was the founder of {x} born ?",
    ("company", "founder", "birthplace"): "where was the founder of {x} born ?",
    ("company", "headquarters", "country"): "in which country is the headquarters of {x} ?",
    ("city", "country", "currency"): "what is the currency used in {x} ?",
    ("city", "country", "capital"): "what is the capital of the country that contains {x} ?",
}


def query_for(relation: str, name: str) -> str:
    """The search query that retrieves the passage stating `relation` of `name`."""
    return f"{relation} of {name}"


def _questions(entities: list[Entity]) -> list[QAExample]:
    by_name = {e.name: e for e in entities}
    out: list[QAExample] = []

    def add(question: str, answer: str, hops: list[tuple[str, str]], kind_key: str) -> None:
        out.append(
            QAExample(
                uid="",
                question=question,
                golden_answers=[answer],
                data_source="toy",
                meta={
                    "hops": len(hops),
                    "template": kind_key,
                    # entity whose passage each hop needs, in order; the next one is the bridge
                    "entities": [name for _, name in hops],
                    "relations": [rel for rel, _ in hops],
                    "needed_queries": [query_for(rel, name) for rel, name in hops],
                    "needed_facts": [f"the {rel} of {name}" for rel, name in hops],  # prefix of `fact`
                },
            )
        )

    for ent in entities:
        for (kind, rel), tmpl in SINGLE_HOP.items():
            if ent.kind == kind:
                add(tmpl.format(x=ent.name), ent.attrs[rel], [(rel, ent.name)], f"{kind}/{rel}")
        for (kind, rel1, rel2), tmpl in TWO_HOP.items():
            if ent.kind == kind:
                bridge = by_name[ent.attrs[rel1]]
                add(
                    tmpl.format(x=ent.name),
                    bridge.attrs[rel2],
                    [(rel1, ent.name), (rel2, bridge.name)],
                    f"{kind}/{rel1}/{rel2}",
                )
    return out


def build_world(seed: int = 0, n_entities: int = 240, test_fraction: float = 0.2) -> ToyWorld:
    """Generate the whole world deterministically from `seed`.

    The test split is stratified by hop count so both single- and two-hop questions are held out;
    questions are unique strings, so train and test never share one.
    """
    rng = random.Random(f"zerosearch-toy-{seed}")
    entities, _ = _make_entities(rng, n_entities)
    capital_of = {e.attrs["capital"]: e.name for e in entities if e.kind == "country"}
    passages = [passage(e, capital_of.get(e.name)) for e in entities]

    questions = _questions(entities)
    train: list[QAExample] = []
    test: list[QAExample] = []
    for hops in (1, 2):
        group = [q for q in questions if q.meta["hops"] == hops]
        rng.shuffle(group)
        n_test = max(1, round(len(group) * test_fraction))
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    rng.shuffle(train)
    rng.shuffle(test)
    for split, examples in (("train", train), ("test", test)):
        for i, ex in enumerate(examples):
            ex.uid = f"toy-{seed}:{split}:{i}"
            ex.meta["split"] = split
    return ToyWorld(seed=seed, entities=entities, passages=passages, train=train, test=test)
