"""`zerosearch collect`: a policy's searches against a real engine become rows holding exactly what the engine
returned; collection resumes after a crash; the command refuses what it cannot do in one line.

The policy is scripted (it searches each question's needed queries, then answers right on even-numbered questions
and wrong on the others), so the expected rows are built independently: BM25 asked directly for each query.
"""

from __future__ import annotations

import json

import pytest
from scripted import ScriptedGenerator

from zerosearch.cli import main
from zerosearch.collect import collect, collect_stats, flatten, sample_questions
from zerosearch.config import RolloutConfig
from zerosearch.rollout import RolloutRunner
from zerosearch.rollout.protocol import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    INFO_OPEN,
    SEARCH_CLOSE,
    SEARCH_OPEN,
    policy_prompt,
)
from zerosearch.search import BM25Search, SearchResult
from zerosearch.search.recording import RecordingSearch
from zerosearch.toy.assets import ensure_toy_assets


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    assets = ensure_toy_assets(tmp_path_factory.mktemp("cache"), seed=0, n_entities=24)
    return assets, assets.load_world(), assets.load_tokenizer(), BM25Search.from_jsonl(assets.corpus_path, top_k=2)


class SearchingPolicy(ScriptedGenerator):
    """Searches the question's needed queries in order (twice the first one, to exercise de-duplication), then
    answers: the gold answer on even-numbered questions, another entity's name on odd ones."""

    def __init__(self, tok, examples) -> None:
        self.tok = tok
        self.by_question = {ex.question.lower(): (i, ex) for i, ex in enumerate(examples)}

    def _example(self, text):
        for q, found in self.by_question.items():
            if q in text:
                return found
        raise AssertionError("unknown question")

    def script(self, contexts, budgets, stop_ids):
        rows = []
        for ctx in contexts:
            text = self.tok.decode(ctx, skip_special_tokens=False)
            i, ex = self._example(text)
            queries = [ex.meta["needed_queries"][0], *ex.meta["needed_queries"]]
            done = text.count(INFO_OPEN) - policy_prompt(ex.question).count(INFO_OPEN)  # the prompt names the tag
            if done < len(queries):
                out = f"{SEARCH_OPEN} {queries[done]} {SEARCH_CLOSE}"
            else:
                answer = ex.golden_answers[0] if i % 2 == 0 else ex.meta["entities"][0]
                out = f"{ANSWER_OPEN} {answer} {ANSWER_CLOSE}"
            rows.append(self.tok.encode(out, add_special_tokens=False))
        return rows, [[0.0] * len(r) for r in rows]


def _runner(tok, examples, search):
    settings = RolloutConfig(max_turns=4, max_new_tokens=24, max_context=2048)
    return RolloutRunner(tok, SearchingPolicy(tok, examples), RecordingSearch(search), settings)


def test_rows_hold_what_the_engine_returned(toy):
    _, world, tok, bm25 = toy
    examples = world.train[:10]
    records = collect(_runner(tok, examples, bm25), examples, rollouts=2, batch_size=3, progress=False)
    rows = flatten(records, "bm25")
    want = []
    for i, ex in enumerate(examples):
        for q in ex.meta["needed_queries"]:  # the repeated first query is kept once
            docs = [bm25.corpus[j] for j in bm25.retrieve([q])[0]]
            want.append((ex.uid, q, ex.question, list(ex.golden_answers), docs, float(i % 2 == 0)))
    got = [(r["uid"].split("/")[0], r["query"], r["question"], r["golden_answers"], r["documents"],
            r["trajectory_em"]) for r in rows]
    assert got == want
    assert {r["source"] for r in rows} == {"bm25"}
    stats = collect_stats(records, rows)
    searches = sum(2 * (len(ex.meta["needed_queries"]) + 1) for ex in examples)
    assert stats["searches"] == searches and stats["rows"] == len(want)
    assert stats["repeated_queries"] == searches - len(want)
    assert stats["rollout_em"] == pytest.approx(sum(i % 2 == 0 for i in range(10)) / 10)


class FlakyEngine:
    """Every third request fails (a fallback result, as a real backend reports a dead server)."""

    def __init__(self, inner) -> None:
        self.inner, self.n = inner, 0

    def search(self, requests, *, step=0):
        out = []
        for req, res in zip(requests, self.inner.search(requests, step=step)):
            self.n += 1
            out.append(SearchResult(req.row_id, [], fallback=True, error="down") if self.n % 3 == 0 else res)
        return out

    def stats(self):
        return {}


def test_failed_searches_are_left_out_and_counted(toy):
    _, world, tok, bm25 = toy
    examples = world.train[:6]
    records = collect(_runner(tok, examples, FlakyEngine(bm25)), examples, progress=False)
    stats = collect_stats(records, flatten(records, "x"))
    total = sum(len(ex.meta["needed_queries"]) + 1 for ex in examples)
    assert stats["failed_searches"] == total // 3
    assert stats["searches"] == total - total // 3
    assert all(r["documents"] for r in flatten(records, "x"))


def test_collection_resumes_after_a_crash(toy, tmp_path):
    _, world, tok, bm25 = toy
    examples = world.train[:9]
    want = collect(_runner(tok, examples, bm25), examples, progress=False)
    store = tmp_path / "rows.questions.jsonl"
    runner = _runner(tok, examples, bm25)
    real_run, calls = runner.run, {"n": 0}

    def crash_on_second_batch(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_run(*a, **kw)

    runner.run = crash_on_second_batch
    with pytest.raises(KeyboardInterrupt):
        collect(runner, examples, out_jsonl=store, batch_size=4, progress=False)
    saved = [json.loads(line)["uid"] for p in tmp_path.iterdir() for line in p.read_text().splitlines()]
    assert saved == [ex.uid for ex in examples[:4]]
    runner = _runner(tok, examples, bm25)
    asked = []
    real = runner.run
    runner.run = lambda chunk, *a, **kw: (asked.extend(e.uid for e in chunk), real(chunk, *a, **kw))[1]
    got = collect(runner, examples, out_jsonl=store, batch_size=4, resume=True, progress=False)
    assert asked == [ex.uid for ex in examples[4:]]
    assert got == want
    assert [json.loads(line) for line in store.read_text().splitlines()] == want


def test_question_sample_is_seeded_and_in_file_order(toy):
    _, world, _, _ = toy
    a = sample_questions(world.train, 7, seed=3)
    assert a == sample_questions(world.train, 7, seed=3) and len(a) == 7
    index = {ex.uid: i for i, ex in enumerate(world.train)}
    assert [index[e.uid] for e in a] == sorted(index[e.uid] for e in a)
    assert sample_questions(world.train, 0, seed=3) == world.train


@pytest.mark.parametrize(("extra", "message"), [
    (["search.backend=simulator"], "collect needs a real search engine"),
    (["model.policy_path="], "model.policy_path is not set"),
    (["collect.rollouts=0"], "collect.rollouts"),
])
def test_collect_refuses_in_one_line(toy, tmp_path, capsys, extra, message):
    assets, *_ = toy
    args = ["collect", "--quiet", f"out_dir={tmp_path}", f"model.policy_path={assets.policy_dir}",
            f"data.train_path={assets.train_path}", f"data.corpus_path={assets.corpus_path}", "search.backend=bm25",
            *extra]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "collected.jsonl").exists()
