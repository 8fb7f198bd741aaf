"""`zerosearch label`: the three labelling rules against independent recomputation, balanced classes, and the LLM
judge through a local OpenAI-compatible server: its verdicts, bounded retries, rows it never labels dropped and
counted (never guessed), and the command's one-line refusals."""

from __future__ import annotations

import json
import random
import re

import pytest
from fake_http import FakeJsonServer

from zerosearch.cli import main
from zerosearch.collect import balance, label_rows, label_stats
from zerosearch.collect.judge import PLACEHOLDERS, LLMJudge, judge_prompt, load_prompt, parse_verdict


def _rows(n, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        gold = f"gold{i}"
        has = rng.random() < 0.3
        docs = [f"The Answer is {gold.upper()}!" if has else f"nothing about it {i}", "filler text"]
        rows.append({"uid": f"q{i}/0/0", "query": f"query {i}", "question": f"question {i}?", "golden_answers": [gold],
                     "documents": docs, "source": "bm25", "data_source": "nq" if i % 2 else "hotpotqa",
                     "trajectory_em": float(rng.random() < 0.4), "trajectory_f1": 0.0, "_has": has})
    return rows


def _words(text):
    return re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()


def _contains(docs, gold):
    words, g = _words(" ".join(docs)), _words(gold)
    return any(words[i:i + len(g)] == g for i in range(len(words)))


def test_cover_em_and_outcome_rules():
    rows = _rows(60)
    pairs, dropped = label_rows(rows, "cover_em")
    assert dropped == 0 and [p["useful"] for p in pairs] == [_contains(r["documents"], r["golden_answers"][0])
                                                             for r in rows]
    assert [p["useful"] for p in pairs] == [r["_has"] for r in rows]
    pairs, _ = label_rows(rows, "outcome")
    assert [p["useful"] for p in pairs] == [r["trajectory_em"] == 1.0 for r in rows]
    assert {p["label_rule"] for p in pairs} == {"outcome"}
    with pytest.raises(ValueError, match="label_rule"):
        label_rows(rows, "vibes")


def test_balance_is_an_equal_subset():
    pairs, _ = label_rows(_rows(80, seed=3), "cover_em")
    out = balance(pairs, seed=1)
    useful = sum(p["useful"] for p in pairs)
    assert sum(p["useful"] for p in out) == len(out) - sum(p["useful"] for p in out) == min(useful, 80 - useful)
    assert all(p in pairs for p in out) and len({p["uid"] for p in out}) == len(out)
    assert out == balance(pairs, seed=1)
    stats = label_stats(pairs, 0, out)
    assert stats["per_source"]["nq"]["useful"] == sum(p["useful"] for p in pairs if p["data_source"] == "nq")


class FakeJudge(FakeJsonServer):
    """Judges like cover-EM would (so the verdicts are known), in the chat or the completions wire format.
    Modes: ok, rambling (a reply without a verdict), plus the base class's errors."""

    def respond(self, body, mode, headers):
        prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        gold = prompt.split("Correct answer(s): ")[1].split("\n")[0]
        docs = prompt.split("for the query:\n")[1].split("\n\nAre these")[0]
        verdict = "useful" if _contains([docs], gold) else "noisy"
        text = "Let me think. Hmm." if mode == "rambling" else f"The documents say so.\nVerdict: {verdict}"
        choice = {"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text}
        return json.dumps({"choices": [{"index": 0, **choice}]}).encode()


@pytest.fixture
def judge_server():
    server = FakeJudge()
    yield server
    server.close()


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_judge_labels_through_an_openai_compatible_server(judge_server, api, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sekrit")
    rows = _rows(12)
    judge = LLMJudge(judge_server.url, "judge-m", api=api, api_key_env="JUDGE_KEY", retries=0, concurrency=3)
    pairs, dropped = label_rows(rows, "judge", judge=judge)
    assert dropped == 0 and [p["useful"] for p in pairs] == [r["_has"] for r in rows]
    req = judge_server.requests[0]
    assert req["path"] == ("/v1/chat/completions" if api == "chat" else "/v1/completions")
    assert req["body"]["model"] == "judge-m" and req["headers"]["authorization"] == "Bearer sekrit"


def test_judge_retries_a_bounded_number_of_times_and_never_guesses(judge_server):
    rows = _rows(3)
    # row 0: two replies without a verdict, then one; row 1: 500 three times (retries=2: given up);
    # row 2: a 401 (not retried)
    judge_server.modes = ["rambling", "rambling", "ok", "500", "500", "500", "401", "ok"]
    judge = LLMJudge(judge_server.url, "m", retries=2, backoff=0.0, concurrency=1)
    pairs, dropped = label_rows(rows, "judge", judge=judge)
    assert [p["uid"] for p in pairs] == [rows[0]["uid"]] and pairs[0]["useful"] == rows[0]["_has"]
    assert dropped == 2
    assert len(judge_server.requests) == 7
    assert judge.stats()["http_failures"] == 2


def test_prompt_file_and_verdict_parsing(tmp_path):
    template = load_prompt()
    assert all(p in template for p in PLACEHOLDERS)
    filled = judge_prompt(template, _rows(1)[0])
    assert "question 0?" in filled and "Doc 1:" in filled and "{" not in filled
    bad = tmp_path / "p.txt"
    bad.write_text("Question: {question}")
    with pytest.raises(ValueError, match="placeholder"):
        load_prompt(bad)
    assert parse_verdict("Verdict: noisy\n...\n**Verdict:** useful") is True
    with pytest.raises(ValueError):
        parse_verdict("I am not sure")


def _write(path, rows):
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "_has"}) + "\n" for r in rows))


def test_label_command_writes_balanced_pairs_and_stats(tmp_path, capsys):
    rows = _rows(50, seed=5)
    _write(tmp_path / "collected.jsonl", rows)
    assert main(["label", "--quiet", f"out_dir={tmp_path}", "--rule", "cover_em"]) == 0
    out = capsys.readouterr().out
    useful = sum(r["_has"] for r in rows)
    assert "unlabelled (dropped): 0" in out and f"after balancing: {2 * min(useful, 50 - useful)}" in out
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 2 * min(useful, 50 - useful) and sum(p["useful"] for p in pairs) == len(pairs) // 2
    stats = json.loads((tmp_path / "pairs-stats.json").read_text())
    assert stats["useful"] == useful and stats["noisy"] == 50 - useful


def test_label_command_judge_failing_on_every_row_is_one_line(tmp_path, capsys, judge_server):
    _write(tmp_path / "collected.jsonl", _rows(4))
    judge_server.modes = ["404"]
    code = main(["label", "--quiet", f"out_dir={tmp_path}", "--rule", "judge", f"collect.judge_url={judge_server.url}",
                 "collect.judge_retries=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "no row of 4 got a label" in err[0] and "404" in err[0]
    assert not (tmp_path / "pairs.jsonl").exists()


@pytest.mark.parametrize(("content", "extra", "message"), [
    (None, [], "collected rows not found"),
    ('{"query": "q"}\n', [], "lacks question"),
    ('not json\n', [], "not JSON objects"),
    ('{"query": "q", "question": "x", "golden_answers": ["a"], "documents": ["b"]}\n', ["--rule", "outcome"],
     "lacks trajectory_em"),
    ('{"query": "q", "question": "x", "golden_answers": ["a"], "documents": ["b"]}\n', [], "balancing left no pairs"),
    ('{"query": "q", "question": "x", "golden_answers": ["a"], "documents": ["b"]}\n', ["--rule", "judge"],
     "collect.judge_url"),
])
def test_label_command_refuses_in_one_line(tmp_path, capsys, content, extra, message):
    if content is not None:
        (tmp_path / "collected.jsonl").write_text(content)
    assert main(["label", "--quiet", f"out_dir={tmp_path}", *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "pairs.jsonl").exists()


def test_mined_negatives_reuse_another_questions_documents_without_the_answer():
    from zerosearch.collect import mined_negatives

    rows = []
    for q in range(30):  # two relations; every query names its own entity
        for rel in ("capital", "currency"):
            gold = f"{rel}{q}"
            has = (q + len(rel)) % 3 != 0
            rows.append({"uid": f"q{q}/0/{rel}", "query": f"{rel} of entity{q}", "question": f"{rel} of entity{q}?",
                         "golden_answers": [gold], "documents": [f"the {rel} of entity{q} is {gold if has else 'x'}"]})
    pairs, _ = label_rows(rows, "cover_em")
    neg = mined_negatives(pairs, 2, seed=0)
    assert neg == mined_negatives(pairs, 2, seed=0)
    by_uid = {p["uid"]: p for p in pairs}
    useful = [p for p in pairs if p["useful"]]
    assert len(neg) == 2 * len(useful)
    for n in neg:
        base, donor = by_uid[n["uid"].rsplit("/", 1)[0]], by_uid[n["negative_from"]]
        assert base["useful"] and not n["useful"]
        assert (n["query"], n["question"], n["golden_answers"]) == (base["query"], base["question"],
                                                                     base["golden_answers"])
        assert n["documents"] == donor["documents"] and donor["uid"].split("/")[0] != base["uid"].split("/")[0]
        assert not _contains(n["documents"], base["golden_answers"][0])
        # the donor shares the most query words possible: the relation (both of the query's other words differ)
        assert donor["query"].split()[0] == base["query"].split()[0]
    assert mined_negatives(pairs, 0, seed=0) == []
    # balancing fills the noisy class with mined negatives first, then collected noisy rows
    one = mined_negatives(pairs, 1, seed=0)
    out = balance(pairs + one[: len(one) // 2], seed=0)
    noisy = [p for p in out if not p["useful"]]
    assert len(noisy) == len(useful) and sum("negative_from" in p for p in noisy) == len(one) // 2
