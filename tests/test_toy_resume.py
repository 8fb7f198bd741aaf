"""`zerosearch toy --resume` is exact: a run crashed in any stage and resumed ends with the weights, bit for bit, of
one that never stopped; a stage whose saved model is torn is rebuilt instead of crashing the resume.

Tiny budgets throughout (a few SFT and RL steps, two test questions), so each run takes seconds. The crash is an
exception raised inside the stage, in the same process: the resumed run then also starts from whatever global
random state the crashed one left, which a stage that does not seed itself would inherit. A two-step warm-start
rarely writes a search, so the collect stage is given the questions' own queries (real BM25 documents) instead of
the policy's: the simulator stage then always has pairs to fine-tune on.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from zerosearch.config import load_config
from zerosearch.rl.trainer import Trainer
from zerosearch.toy import pipeline
from zerosearch.toy.pipeline import STAGES, ToySchedule, run_toy

SCHEDULE = ToySchedule(simulator_steps=2, policy_steps=2, batch_size=2, collect_questions=12, collect_rollouts=1,
                       max_eval_pairs=4)


def _oracle_collect(runner, questions, *, rollouts, progress):
    """Records as `collect` makes them, from each question's needed queries sent through the runner's search."""
    from zerosearch.search import SearchRequest

    records = []
    for ex in questions:
        reqs = [SearchRequest(i, q, ex.question, ex.golden_answers) for i, q in enumerate(ex.meta["needed_queries"])]
        searches = [{"query": r.query, "documents": res.documents} for r, res in zip(reqs, runner.search.search(reqs))]
        records.append({"uid": ex.uid, "question": ex.question, "golden_answers": ex.golden_answers,
                        "data_source": "toy", "rollouts": [{"em": 0.0, "f1": 0.0, "searches": searches,
                                                            "failed_searches": 0}]})
    return records


class Crash(RuntimeError):
    pass


def _cfg(out, cache):
    return load_config(None, [
        f"out_dir={out}", f"cache_dir={cache}", "seed=3", "generation.backend=hf", "rollout.n_samples=2",
        "rollout.max_turns=1", "rollout.max_new_tokens=6", "rollout.max_context=512", "search.top_k=2",
        "search.max_new_tokens=12", "trainer.steps=2", "trainer.batch_questions=2", "trainer.mini_batches=1",
        "trainer.checkpoint_every=1", "trainer.lr=1e-3", "data.max_test_examples=2",
    ])  # fmt: skip


def _run(out, cache, *, resume=False):
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pipeline, "collect", _oracle_collect)
        return run_toy(_cfg(out, cache), resume=resume, progress=False, schedule=SCHEDULE)


def _weights(out):
    return {name: load_file(out / name / "model.safetensors") for name in ("simulator", "policy-warm", "policy-rl")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = _run(out, cache)
    assert summary["simulator_quality"]["sft"]["n"] > 0
    return cache, _weights(out), summary, (out / "pairs.jsonl").read_text()


def _torn_save(monkeypatch, which):
    """`save_pretrained` of the `which`-th model save writes the config and half the weights, then dies."""
    from transformers import PreTrainedModel

    real = PreTrainedModel.save_pretrained
    calls = {"n": 0}

    def save(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == which:
            f = f"{path}/model.safetensors"
            data = open(f, "rb").read()
            open(f, "wb").write(data[: len(data) // 2])
            raise Crash("killed while saving")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save)


def _crash_in(stage, monkeypatch):
    from zerosearch.rl.sft_trainer import SFTTrainer

    if stage == "warm-start":  # killed while writing policy-warm/: a torn model.safetensors
        _torn_save(monkeypatch, 1)
    elif stage == "collect":  # killed after the rows, before the pairs
        def label_rows(rows, rule, **kw):
            assert rows  # collected before the crash
            raise Crash(f"killed while labelling {len(rows)} rows")

        monkeypatch.setattr(pipeline, "label_rows", label_rows)
    elif stage == "simulator":
        real_fit = SFTTrainer.fit

        def fit(self, **kw):
            if kw.get("desc") == "simulator sft":
                raise Crash("killed in the simulator's SFT")
            return real_fit(self, **kw)

        monkeypatch.setattr(SFTTrainer, "fit", fit)
    elif stage == "simulator-eval":
        def quality(*a, **kw):
            raise Crash("killed while measuring the simulator")

        monkeypatch.setattr(pipeline, "simulator_quality", quality)
    elif stage in ("eval-before", "eval-after"):
        real_eval = pipeline.evaluate
        target = "eval before RL" if stage == "eval-before" else "eval after RL"

        def evaluate(*a, **kw):
            if kw.get("desc") == target:
                raise Crash(f"killed in {stage}")
            return real_eval(*a, **kw)

        monkeypatch.setattr(pipeline, "evaluate", evaluate)
    elif stage == "rl":  # after the checkpoint of step 1
        real_step = Trainer.train_step

        def train_step(self):
            if self.step == 1:
                raise Crash("killed in RL")
            return real_step(self)

        monkeypatch.setattr(Trainer, "train_step", train_step)


def _same(got, want, what):
    for model, tensors in want.items():
        assert got[model].keys() == tensors.keys()
        diff = max((got[model][k] - v).abs().max().item() for k, v in tensors.items())
        assert diff == 0.0, f"{model} differs after {what} (max abs diff {diff})"


@pytest.mark.slow
def test_toy_resume_after_a_crash_in_each_stage_is_exact(reference, tmp_path, monkeypatch):
    """Crash in the warm-start's save (torn weights), resume and crash in each later stage in turn (damaging the saved
    warm-start after the simulator's crash), then resume to the end: same weights, pairs and scores as one run."""
    cache, want, want_summary, want_pairs = reference
    for i, stage in enumerate(STAGES):
        with monkeypatch.context() as m:
            _crash_in(stage, m)
            with pytest.raises(Crash):
                _run(tmp_path, cache, resume=i > 0)
        torch.manual_seed(1000 + i)  # whatever global state a crash leaves, no stage may depend on it
        if stage == "simulator":  # a finished stage's weights damaged afterwards: rebuilt, not crashed on
            weights = tmp_path / "policy-warm" / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:1000])
    summary = _run(tmp_path, cache, resume=True)
    _same(_weights(tmp_path), want, "crashes in every stage")
    assert (tmp_path / "pairs.jsonl").read_text() == want_pairs
    assert summary["simulator_quality"] == want_summary["simulator_quality"]
    assert summary["after"] == want_summary["after"]
