"""The eval harness: several test sets from a directory or a list, real BM25 search, per-dataset EM /
cover-EM / F1 checked against numbers worked out by hand, and every row scored when the row count is
not a multiple of the batch size.

The policy is scripted (search once with the question, then give a fixed answer), so the expected
scores follow from the reward definition alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scripted import ScriptedGenerator

from zerosearch.config import RolloutConfig
from zerosearch.eval import evaluate, format_table, load_test_sets, qa_files
from zerosearch.rollout import RolloutRunner
from zerosearch.search import BM25Search
from zerosearch.toy.tokenizer import build_tokenizer
from zerosearch.toy.trajectories import vocabulary_texts

# question -> (gold answers, scripted answer or None for "never answers")
NQ = {
    "what is the capital of france": (["Paris"], "paris"),  # EM 1, cover 1, F1 1
    "what is the capital of italy": (["Rome"], "the city of rome"),  # EM 0, cover 1, F1 2·(1/3·1)/(1/3+1) = 0.5
    "what is the capital of spain": (["Madrid"], None),  # no answer: 0, 0, 0
}
HOTPOT = {
    "which animal is the largest": (["Blue Whale", "whale"], "blue whale"),  # EM 1, cover 1, F1 1
    "which animal howls at the moon": (["grey wolf"], "red fox"),  # 0, 0, 0
}
EXPECTED = {
    "nq": {"em": 1 / 3, "cover_em": 2 / 3, "f1": 1.5 / 3, "n": 3},
    "hotpotqa": {"em": 1 / 2, "cover_em": 1 / 2, "f1": 1 / 2, "n": 2},
}
PASSAGES = ["paris is the capital of france", "rome is the capital of italy", "madrid is the capital of spain",
            "the blue whale is the largest animal", "the grey wolf howls at the moon"]


@pytest.fixture(scope="module")
def tok():
    words = [*NQ, *HOTPOT, *PASSAGES, *(a for _, a in [*NQ.values(), *HOTPOT.values()] if a)]
    return build_tokenizer([*words, *vocabulary_texts()])


@pytest.fixture()
def test_dir(tmp_path):
    """Search-R1 layouts side by side: `nq/test.jsonl` without data_source, `hotpotqa.jsonl` with it."""
    (tmp_path / "nq").mkdir()
    (tmp_path / "nq" / "test.jsonl").write_text("".join(
        json.dumps({"id": i, "question": q, "golden_answers": g}) + "\n" for i, (q, (g, _)) in enumerate(NQ.items())))
    (tmp_path / "hotpotqa.jsonl").write_text("".join(
        json.dumps({"id": i, "question": q, "golden_answers": g, "data_source": "hotpotqa"}) + "\n"
        for i, (q, (g, _)) in enumerate(HOTPOT.items())))
    (tmp_path / "notes.txt").write_text("not a test set")
    return tmp_path


class ScriptedPolicy(ScriptedGenerator):
    """Turn 1: `<search> {question} </search>`; turn 2: `<answer> {scripted} </answer>` (or nothing).

    `crash_on_call` makes that sampling call (1-based) raise, as an OOM or a killed job would; `asked` lists
    the questions each call saw.
    """

    def __init__(self, tok, crash_on_call: int = 0) -> None:
        self.tok = tok
        self.answers = {q: a for q, (_, a) in [*NQ.items(), *HOTPOT.items()]}
        self.crash_on_call = crash_on_call
        self.asked: list[str] = []

    def script(self, contexts, max_new_tokens, stop_ids):
        if len(self.asked) + 1 == self.crash_on_call:
            raise RuntimeError("simulated crash")
        out = []
        questions = []
        for ctx in contexts:
            text = self.tok.decode(ctx, skip_special_tokens=False)
            question = next(q for q in self.answers if q in text)
            questions.append(question)
            if "<information>" not in text.split(question, 1)[1]:
                reply = f"<search> {question} </search>"
            elif self.answers[question] is None:
                reply = "i do not know"
            else:
                reply = f"<answer> {self.answers[question]} </answer>"
            out.append(self.tok.encode(reply, add_special_tokens=False))
        self.asked.append(questions)
        return out, [[0.0] * len(ids) for ids in out]


def _runner(tok, tmp_path, policy: ScriptedPolicy | None = None) -> RolloutRunner:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": p}) + "\n" for i, p in enumerate(PASSAGES)))
    settings = RolloutConfig(max_turns=2, max_new_tokens=16, max_context=512)
    return RolloutRunner(tok, policy or ScriptedPolicy(tok), BM25Search.from_jsonl(corpus, top_k=1), settings)


def test_directory_and_comma_list_load_every_dataset(test_dir):
    files = qa_files(str(test_dir))
    assert [f.relative_to(test_dir).as_posix() for f in files] == ["hotpotqa.jsonl", "nq/test.jsonl"]
    listed = load_test_sets(f"{test_dir / 'nq' / 'test.jsonl'},{test_dir / 'hotpotqa.jsonl'}")
    from_dir = load_test_sets(str(test_dir))
    assert sorted(e.question for e in listed) == sorted(e.question for e in from_dir) == sorted([*NQ, *HOTPOT])
    assert {e.data_source for e in from_dir} == {"nq", "hotpotqa"}
    assert len({e.uid for e in from_dir}) == 5
    capped = load_test_sets(str(test_dir), max_per_source=1)
    assert sorted(e.data_source for e in capped) == ["hotpotqa", "nq"]
    with pytest.raises(FileNotFoundError):
        load_test_sets(str(test_dir / "missing"))


@pytest.mark.parametrize("batch_size", [2, 64])
def test_scores_match_hand_computed_values(tok, test_dir, tmp_path, batch_size):
    examples = load_test_sets(str(test_dir))
    out = tmp_path / "eval.jsonl"
    summary = evaluate(_runner(tok, tmp_path), examples, batch_size=batch_size, out_jsonl=out, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and sorted(r["question"] for r in rows) == sorted([*NQ, *HOTPOT])  # 5 % 2 != 0
    for src, want in EXPECTED.items():
        got = summary["per_source"][src]
        assert got["n"] == want["n"]
        for key in ("em", "cover_em", "f1"):
            assert got[key] == pytest.approx(want[key]), (src, key)
        assert got["searches"] == 1.0
    for key in ("em", "cover_em", "f1"):
        assert summary["average"][key] == pytest.approx((EXPECTED["nq"][key] + EXPECTED["hotpotqa"][key]) / 2)
    assert summary["average"]["n"] == 5
    # Real search ran: each trajectory holds the passage BM25 ranks first for its question.
    for r in rows:
        assert r["queries"] == [r["question"]]
    assert "paris is the capital of france" in next(r for r in rows if "france" in r["question"])["trajectory"]
    assert "average" in format_table(summary)


def _check_summary(summary):
    for src, want in EXPECTED.items():
        for key in ("em", "cover_em", "f1", "n"):
            assert summary["per_source"][src][key] == pytest.approx(want[key]), (src, key)


def test_interrupted_eval_resumes_without_redoing_rows(tok, test_dir, tmp_path):
    examples = load_test_sets(str(test_dir))
    out = tmp_path / "run" / "eval.jsonl"
    part = out.with_name("eval.part0.jsonl")
    # Batches of 2 take two sampling calls each (search, then answer): call 3 is the second batch's first.
    crashing = ScriptedPolicy(tok, crash_on_call=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(_runner(tok, tmp_path, crashing), examples, batch_size=2, out_jsonl=out, progress=False)
    saved = [json.loads(line) for line in part.read_text().splitlines()]
    assert [r["uid"] for r in saved] == [e.uid for e in examples[:2]]  # the finished batch survived the crash
    with open(part, "a") as f:
        f.write('{"uid": "cut short by the crash", "f1"')  # a write torn mid-line

    resumed = ScriptedPolicy(tok)
    summary = evaluate(_runner(tok, tmp_path, resumed), examples, batch_size=2, out_jsonl=out, progress=False,
                       resume=True)
    rolled_out = {q for call in resumed.asked for q in call}
    assert rolled_out == {e.question for e in examples[2:]}  # only the rows the crash lost
    _check_summary(summary)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["uid"] for r in rows] == [e.uid for e in examples]  # one merged file, in the test sets' order
    assert not part.exists()

    # Resuming a finished evaluation rolls out nothing; resuming into another test set is refused.
    again = ScriptedPolicy(tok)
    _check_summary(evaluate(_runner(tok, tmp_path, again), examples, out_jsonl=out, progress=False, resume=True))
    assert again.asked == []
    with pytest.raises(ValueError, match="--resume only continues the same evaluation"):
        evaluate(_runner(tok, tmp_path), examples[:3], out_jsonl=out, progress=False, resume=True)
    # Without --resume the earlier rows are discarded and everything runs again.
    fresh = ScriptedPolicy(tok)
    _check_summary(evaluate(_runner(tok, tmp_path, fresh), examples, batch_size=2, out_jsonl=out, progress=False))
    assert {q for call in fresh.asked for q in call} == {e.question for e in examples}


def test_cli_eval_scores_every_row(tmp_path):
    """`zerosearch eval` on the toy world (untrained tiny policy, BM25): rows not a multiple of the batch."""
    from zerosearch.toy.assets import ensure_toy_assets

    assets = ensure_toy_assets(tmp_path / "cache", seed=0, n_entities=24)
    out = tmp_path / "eval.jsonl"
    cmd = [sys.executable, "-m", "zerosearch.cli", "eval", "--quiet", "--batch-size", "4", "--out", str(out),
           f"model.policy_path={assets.policy_dir}", f"model.tokenizer_path={assets.tokenizer_dir}",
           f"data.test_path={assets.test_path}", f"data.corpus_path={assets.corpus_path}", "data.max_test_examples=5",
           "search.backend=bm25", "rollout.max_turns=1", "rollout.max_new_tokens=6", f"out_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "eval-summary.json").read_text())
    assert len(rows) == summary["average"]["n"] == sum(v["n"] for v in summary["per_source"].values())
    assert all(v["n"] <= 5 for v in summary["per_source"].values()) and len(rows) % 4 != 0


@pytest.mark.parametrize("content, needle", [
    ("", "no questions"),
    ("\n \n\n", "no questions"),
    ('{"question": "q", "golden_answers": []}\n', "test.jsonl:1: no gold answer"),
])
def test_cli_eval_refuses_a_test_set_without_questions(tmp_path, capsys, monkeypatch, content, needle):
    """Instead of a table of zeros: one line naming the file (and row), exit code 2, before a model loads."""
    from zerosearch.cli import main
    from zerosearch.toy.assets import ensure_toy_assets

    assets = ensure_toy_assets(tmp_path / "cache", seed=0, n_entities=24)
    monkeypatch.setattr("zerosearch.build.load_policy", lambda *a, **k: pytest.fail("a model was loaded"))
    capsys.readouterr()
    test = tmp_path / "test.jsonl"
    test.write_text(content)
    out = tmp_path / "run" / "eval.jsonl"
    code = main(["eval", "--quiet", "--out", str(out), f"model.policy_path={assets.policy_dir}",
                 f"model.tokenizer_path={assets.tokenizer_dir}", f"data.test_path={test}",
                 f"data.corpus_path={assets.corpus_path}", "search.backend=bm25", f"out_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(test) in err and needle in err
    assert not (tmp_path / "run").exists()
