"""Reliability: bad inputs to the public ops, hostile policy output in rollouts, non-finite losses,
failing search backends, and crash debris in checkpoint / metrics files.

Expectations are written from the scripts and files the tests themselves build (which tokens the policy
wrote, which files a crashed writer left), never read back from the code under test.
"""

from __future__ import annotations

import builtins
import errno
import json
import logging
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scripted import FnCompleter, ScriptedGenerator
from transformers import Qwen2ForCausalLM

from zerosearch.algos import grpo_advantages
from zerosearch.build import build_trainer
from zerosearch.cli import main
from zerosearch.config import RolloutConfig, RunConfig, apply_overrides
from zerosearch.data.qa import QAExample
from zerosearch.ops import info_span_mask, masked_pg_loss, policy_loss_mask, token_logprobs
from zerosearch.reward import extract_answer, score_response
from zerosearch.rl.trainer import NonFiniteLossError
from zerosearch.rollout import RolloutRunner, policy_text, query_text
from zerosearch.rollout import protocol as prompts
from zerosearch.runtime import checkpoint as checkpoint_mod
from zerosearch.runtime import jsonl as jsonl_mod
from zerosearch.runtime.checkpoint import latest_checkpoint, list_checkpoints, load_latest_checkpoint, save_checkpoint
from zerosearch.runtime.metrics import MetricsLogger, read_metrics
from zerosearch.search import BM25Search
from zerosearch.search.base import EMPTY_QUERY_DOCS, UNAVAILABLE_DOCS, SearchResult
from zerosearch.toy.assets import ensure_toy_assets
from zerosearch.toy.tokenizer import build_tokenizer

META = torch.device("meta")

# ================================================================ public ops: bad inputs


def _pg_inputs(b=2, t=5, h=8, v=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g)
    weight = torch.randn(v, h, generator=g)
    targets = torch.randint(0, v, (b, t), generator=g)
    old = -torch.rand(b, t, generator=g) * 3
    adv = torch.randn(b, t, generator=g)
    ref = -torch.rand(b, t, generator=g) * 3
    mask = torch.rand(b, t, generator=g) > 0.3
    return hidden, weight, targets, old, adv, ref, mask


def _strided(x: torch.Tensor) -> torch.Tensor:
    """Same values, non-contiguous layout (every other element of a twice-as-wide buffer)."""
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    wide[..., ::2] = x
    out = wide[..., ::2]
    assert not out.is_contiguous()
    return out


def test_token_logprobs_non_contiguous_inputs_match_contiguous():
    hidden, weight, targets, *_, mask = _pg_inputs()
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = _strided(hidden.clone()).requires_grad_(), weight.t().contiguous().t().requires_grad_()
    assert not w2.is_contiguous()
    a = token_logprobs(h1, w1, targets, mask=mask, with_entropy=True)
    b = token_logprobs(h2, w2, _strided(targets), mask=_strided(mask), with_entropy=True)
    torch.testing.assert_close(a, b)
    (a[0] + a[1]).sum().backward()
    (b[0] + b[1]).sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)


def test_masked_pg_loss_non_contiguous_inputs_match_contiguous():
    hidden, weight, targets, old, adv, ref, mask = _pg_inputs(seed=1)
    kw = dict(kl_coef=0.1, entropy_coef=0.01)
    want, _ = masked_pg_loss(hidden, weight, targets, old, adv, mask, ref_logprobs=ref, **kw)
    got, _ = masked_pg_loss(_strided(hidden), weight.t().contiguous().t(), _strided(targets), _strided(old),
                            _strided(adv), _strided(mask), ref_logprobs=_strided(ref), **kw)
    assert torch.isfinite(want)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("arg", ["weight", "targets", "mask"])
def test_token_logprobs_device_mismatch_names_argument(arg):
    hidden, weight, targets, *_, mask = _pg_inputs()
    args = dict(weight=weight, targets=targets, mask=mask)
    args[arg] = args[arg].to(META)
    with pytest.raises(ValueError, match=f"{arg} is on meta"):
        token_logprobs(hidden, args["weight"], args["targets"], mask=args["mask"])


@pytest.mark.parametrize("arg", ["old_logprobs", "advantages", "ref_logprobs", "mask"])
def test_masked_pg_loss_device_mismatch_names_argument(arg):
    hidden, weight, targets, old, adv, ref, mask = _pg_inputs()
    args = dict(old_logprobs=old, advantages=adv, ref_logprobs=ref, mask=mask)
    args[arg] = args[arg].to(META)
    with pytest.raises(ValueError, match=f"{arg} is on meta"):
        masked_pg_loss(hidden, weight, targets, args["old_logprobs"], args["advantages"], args["mask"],
                       ref_logprobs=args["ref_logprobs"], kl_coef=0.1)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(hidden=lambda x: x.long()), "hidden"),
        (dict(targets=lambda x: x.float()), "targets"),
        (dict(old=lambda x: x.long()), "old_logprobs"),
        (dict(adv=lambda x: x.int()), "advantages"),
        (dict(mask=lambda x: x.float()), "mask"),
        (dict(weight=lambda x: x.double()), "weight"),
        (dict(old=lambda x: x[:, :-1]), "old_logprobs"),
        (dict(hidden=lambda x: x[:, :-1]), "hidden"),
    ],
)
def test_masked_pg_loss_bad_dtype_or_shape_names_argument(change, match):
    names = ["hidden", "weight", "targets", "old", "adv", "ref", "mask"]
    args = dict(zip(names, _pg_inputs()))
    for k, f in change.items():
        args[k] = f(args[k])
    with pytest.raises(ValueError, match=match):
        masked_pg_loss(args["hidden"], args["weight"], args["targets"], args["old"], args["adv"], args["mask"],
                       ref_logprobs=args["ref"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(clip_low=float("nan")), "clip_low"),
        (dict(clip_high=float("nan")), "clip_high"),
        (dict(clip_high=float("inf")), "clip_high"),
        (dict(kl_coef=float("nan")), "kl_coef"),
        (dict(dual_clip=float("nan")), "dual_clip"),
        (dict(entropy_coef=float("nan")), "entropy_coef"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=-1.0), "temperature"),
    ],
)
def test_masked_pg_loss_non_finite_coefficients_are_refused(kwargs, match):
    hidden, weight, targets, old, adv, ref, mask = _pg_inputs()
    with pytest.raises(ValueError, match=match):
        masked_pg_loss(hidden, weight, targets, old, adv, mask, ref_logprobs=ref, **kwargs)


def test_policy_loss_mask_checks_types_and_devices():
    resp = torch.tensor([[1, 1, 0]])
    info = torch.tensor([[0, 1, 0]], dtype=torch.uint8)
    assert policy_loss_mask(resp, info).tolist() == [[True, False, False]]  # integer 0/1 masks are fine
    with pytest.raises(TypeError, match="response_mask"):
        policy_loss_mask(torch.tensor([[0.5, 1.0, 0.0]]), info)
    with pytest.raises(TypeError, match="info_mask"):
        policy_loss_mask(resp, [[0, 1, 0]])
    with pytest.raises(ValueError, match="info_mask is on meta"):
        policy_loss_mask(resp, info.to(META))


def test_info_span_mask_transposed_batch_matches_row_by_row():
    rows = torch.tensor([[1, 5, 2, 6, 3], [5, 3, 3, 3, 4]])
    batch = rows.t().contiguous().t()
    assert not batch.is_contiguous()
    want = [[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert info_span_mask(batch, [5], [6]).int().tolist() == want


# ================================================================ rollout: hostile policy output

WORDS = "capital of zorvia melbrook is answer think a b c d e f g h sorry \ufffd"
Q = "capital of zorvia"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer([WORDS])


class Script(ScriptedGenerator):
    """Sampler that replays fixed id segments per turn, ignoring budgets and stop ids unless asked.

    Playing back raw ids (not text) lets a test hand the rollout exactly what a misbehaving sampler
    or a byte-level tokenizer would produce.
    """

    def __init__(self, segments: list[list[int]], honour_budget: bool = False):
        self.segments = [list(s) for s in segments]
        self.honour_budget = honour_budget
        self.budgets: list[list[int]] = []

    def script(self, contexts, max_new_tokens, stop_ids):
        self.budgets.append(list(max_new_tokens))
        out = []
        for budget in max_new_tokens:
            seg = self.segments.pop(0) if self.segments else []
            out.append(seg[:budget] if self.honour_budget else seg)
        return out, [[-1.0] * len(s) for s in out]


class Backend:
    def __init__(self, docs=("melbrook is the capital",), fail: Exception | None = None, drop=False):
        self.docs, self.fail, self.drop = list(docs), fail, drop
        self.requests = []

    def search(self, requests, *, step=0):
        self.requests.extend(requests)
        if self.fail is not None:
            raise self.fail
        return [] if self.drop else [SearchResult(r.row_id, self.docs, noisy=False) for r in requests]

    def stats(self):
        return {}


def ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def run_one(tok, segments, backend=None, **settings):
    backend = backend or Backend()
    sampler = segments if isinstance(segments, Script) else Script(segments)
    runner = RolloutRunner(tok, sampler, backend, RolloutConfig(**settings))
    [t] = runner.run([QAExample(uid="u", question=Q, golden_answers=["melbrook"])])
    assert len(t.response_ids) == len(t.loss_mask) == len(t.sample_logprobs)
    return t, backend, runner


def policy_ids(t) -> list[int]:
    return [i for i, m in zip(t.response_ids, t.loss_mask) if m]


def test_nested_search_tags_query_is_innermost_well_formed_span(tok):
    turn = ids(tok, "<search> a <search> b c </search>")
    t, backend, _ = run_one(tok, [turn, ids(tok, "<answer> melbrook </answer>")], max_turns=1)
    assert [r.query for r in backend.requests] == ["b c"] and t.queries == ["b c"]
    assert policy_ids(t) == turn + ids(tok, "<answer> melbrook </answer>")
    assert t.finished and t.invalid_actions == 0


def test_close_search_without_open_is_an_invalid_action(tok):
    turn = ids(tok, "<think> a </think> b </search>")
    t, backend, _ = run_one(tok, [turn, ids(tok, "<answer> melbrook </answer>")], max_turns=1)
    assert backend.requests == [] and t.queries == [] and t.invalid_actions == 1
    engine = [i for i, m in zip(t.response_ids, t.loss_mask) if not m]
    assert engine == ids(tok, prompts.INVALID_ACTION)


def test_unclosed_answer_at_end_of_budget_scores_zero(tok):
    # the sampler overruns its 4-token budget; the rollout keeps only the budget
    long_answer = ids(tok, "<answer> melbrook melbrook melbrook melbrook melbrook")
    t, _, _ = run_one(tok, [long_answer], max_turns=0, max_new_tokens=4)
    assert policy_ids(t) == long_answer[:4]
    assert not t.finished
    text = policy_text(t, tok)
    assert extract_answer(text) is None
    assert score_response(text, ["melbrook"]) == {"f1": 0.0, "em": 0.0, "cover_em": 0.0, "has_answer": 0.0}


def test_sampler_ignoring_stop_ids_is_cut_at_the_first_stop(tok):
    turn = ids(tok, "<search> a </search> <answer> melbrook </answer>")
    t, backend, _ = run_one(tok, [turn, ids(tok, "<answer> b </answer>")], max_turns=1)
    first_stop = ids(tok, "<search> a </search>")  # everything the sampler wrote after the stop is dropped
    assert policy_ids(t) == first_stop + ids(tok, "<answer> b </answer>")
    assert [r.query for r in backend.requests] == ["a"]
    assert extract_answer(policy_text(t, tok)) == "b"


def test_sampler_with_misaligned_logprobs_is_an_error(tok):
    class Bad(ScriptedGenerator):
        def script(self, contexts, max_new_tokens, stop_ids):
            return [ids(tok, "<answer> a </answer>")], [[0.0]]

    runner = RolloutRunner(tok, Bad(), Backend())
    with pytest.raises(ValueError, match="log-probs"):
        runner.run([QAExample(uid="u", question=Q, golden_answers=["a"])])


@pytest.mark.parametrize("query_text_in,expected", [
    ("<search> \ufffd \ufffd </search>", None),  # nothing but decode garbage: treated as empty
    ("<search> </search>", None),
])
def test_garbage_or_empty_query_is_not_sent(tok, query_text_in, expected):
    t, backend, _ = run_one(tok, [ids(tok, query_text_in), ids(tok, "<answer> a </answer>")], max_turns=1)
    assert backend.requests == [] and t.queries == [""]
    obs = ids(tok, prompts.observation_text(EMPTY_QUERY_DOCS))
    assert [i for i, m in zip(t.response_ids, t.loss_mask) if not m] == obs


def test_over_long_query_is_truncated(tok):
    words = ("a b c d e f g h " * 5).split()  # 40 words, within the 48-token turn budget
    t, backend, _ = run_one(tok, [ids(tok, "<search> " + " ".join(words) + " </search>")], max_turns=1,
                            max_query_chars=13)
    [req] = backend.requests
    assert req.query == "a b c d e f g"  # first 13 characters of the single-spaced query
    assert t.queries == [req.query]


def test_query_text_sanitises_decode_artifacts():
    assert query_text("  \t\n  ", 50) == ""
    assert query_text("caf\ufffd\ufffd  au\x00 lait\x07", 50) == "caf au lait"
    assert query_text("\ud800 zorvia", 50) == "zorvia"  # a lone surrogate cannot be UTF-8 encoded
    assert query_text("x" * 100, 10) == "x" * 10
    assert query_text("  leading and trailing  ", 7) == "leading"


def test_answers_in_prompt_or_documents_are_never_scored(tok):
    """The prompt's example answer and an answer inside search results do not count: only the policy's."""
    backend = Backend(docs=["<answer> melbrook </answer>"])
    t, _, runner = run_one(tok, [ids(tok, "<search> a </search>"), ids(tok, "sorry")], backend=backend,
                           max_turns=1)
    full = tok.decode(t.prompt_ids + t.response_ids)
    assert "<answer> beijing </answer>" in full  # the template's example
    assert extract_answer(t.response_text) == "melbrook"  # present in the engine-written text...
    assert score_response(policy_text(t, tok), ["melbrook", "beijing"])["f1"] == 0.0  # ...but not scored


def test_prompt_longer_than_context_is_truncated_without_sampling(tok):
    sampler = Script([ids(tok, "<answer> melbrook </answer>")])
    probe = RolloutRunner(tok, sampler, Backend())
    limit = len(probe.prompt_ids(Q)) - 1
    t, _, _ = run_one(tok, sampler, max_context=limit)
    assert t.truncated and t.response_ids == [] and sampler.budgets == []
    assert score_response(policy_text(t, tok), ["melbrook"])["f1"] == 0.0


@pytest.mark.parametrize("room", [1, 3, 9, 25])
def test_context_limit_holds_for_overrunning_sampler(tok, room):
    sampler = Script([ids(tok, "<search> capital of zorvia </search>")] * 4 + [ids(tok, "a " * 40)])
    probe = RolloutRunner(tok, sampler, Backend())
    limit = len(probe.prompt_ids(Q)) + room
    t, _, _ = run_one(tok, sampler, max_context=limit, max_turns=3, max_new_tokens=64)
    assert len(t.prompt_ids) + len(t.response_ids) <= limit
    assert all(b <= limit - len(t.prompt_ids) for call in sampler.budgets for b in call)


def test_byte_level_tokenizer_replacement_characters(tmp_path):
    """Lone bytes of a multi-byte character decode to U+FFFD: the query is cleaned, scoring does not crash."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<eos>"])
    raw.train_from_iterator([prompts.policy_prompt(Q), "melbrook zorvia"], trainer)
    btok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")
    btok.add_tokens(list(prompts.TAGS))
    e_acute = btok.encode("é", add_special_tokens=False)
    assert len(e_acute) == 2 and btok.decode(e_acute[:1]) == "\ufffd"
    lone = e_acute[:1]  # the first byte of "é" on its own
    search = ids(btok, "<search>") + lone + ids(btok, " zorvia") + lone + ids(btok, "</search>")
    answer = ids(btok, "<answer>") + ids(btok, " melbrook ") + lone + ids(btok, " </answer>")
    t, backend, _ = run_one(btok, [search, answer], max_turns=1)
    assert [r.query for r in backend.requests] == ["zorvia"]
    assert t.finished
    text = policy_text(t, btok)
    assert extract_answer(text) == "melbrook \ufffd"
    # SQuAD normalisation keeps U+FFFD as a token: one correct token of two -> F1 = 2/3, no crash
    scores = score_response(text, ["melbrook"])
    assert scores["has_answer"] == 1.0 and scores["f1"] == pytest.approx(2 / 3) and scores["cover_em"] == 1.0


def test_failing_backend_falls_back_and_counts(tok):
    t, backend, _ = run_one(tok, [ids(tok, "<search> a </search>"), ids(tok, "<answer> b </answer>")],
                            backend=Backend(fail=ConnectionError("down")), max_turns=1)
    assert len(backend.requests) == 1 and t.fallbacks == 1 and t.finished
    obs = ids(tok, prompts.observation_text(prompts.format_documents([UNAVAILABLE_DOCS])))
    assert [i for i, m in zip(t.response_ids, t.loss_mask) if not m] == obs


def test_simulator_whose_generator_fails_is_counted_as_fallback(tok):
    """The simulator client turns per-request failures into fallback results; the rollout counts them."""
    from zerosearch.search import SimulatorSearch

    sim = SimulatorSearch(FnCompleter(lambda batch: [TimeoutError("no reply")] * len(batch)), None)
    t, _, _ = run_one(tok, [ids(tok, "<search> a </search>"), ids(tok, "<answer> b </answer>")],
                      backend=sim, max_turns=1)
    assert t.fallbacks == 1 and sim.stats()["fallbacks"] == 1


def test_backend_dropping_a_row_is_a_fallback_not_an_empty_query(tok):
    t, _, _ = run_one(tok, [ids(tok, "<search> a </search>"), ids(tok, "<answer> b </answer>")],
                      backend=Backend(drop=True), max_turns=1)
    assert t.fallbacks == 1
    assert UNAVAILABLE_DOCS.lower().split()[0] in tok.decode(t.response_ids)
    assert "empty" not in tok.decode([i for i, m in zip(t.response_ids, t.loss_mask) if not m])


# ================================================================ numerics


@settings(max_examples=200, deadline=None)
@given(
    groups=st.lists(
        st.tuples(st.floats(-1e3, 1e3, allow_nan=False, width=64), st.integers(1, 9)), min_size=1, max_size=6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_grpo_constant_groups_have_exactly_zero_advantage(groups, dtype):
    rewards = [v for v, n in groups for _ in range(n)]
    gids = [g for g, (_, n) in enumerate(groups) for _ in range(n)]
    adv = grpo_advantages(torch.tensor(rewards, dtype=dtype), gids)
    assert adv.dtype == dtype and torch.isfinite(adv).all()
    assert torch.equal(adv, torch.zeros_like(adv)), (groups, adv)


def test_grpo_refuses_non_finite_rewards():
    with pytest.raises(ValueError, match="finite"):
        grpo_advantages(torch.tensor([1.0, float("nan")]), [0, 0])


# ------------------------------------------------- trainer on the toy world (tiny settings)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    assets = ensure_toy_assets(tmp_path_factory.mktemp("cache"), seed=0)
    return assets, assets.load_world(), assets.load_tokenizer(), BM25Search.from_jsonl(assets.corpus_path, top_k=2)


def _trainer(toy, out, search=None, **overrides):
    assets, world, tok, bm25 = toy
    cfg = RunConfig(out_dir=str(out))
    apply_overrides(cfg, {"rollout.max_turns": 1, "rollout.max_new_tokens": 8, "rollout.n_samples": 2,
                          "trainer.batch_questions": 2, "trainer.steps": 1, "trainer.checkpoint_every": 0,
                          "trainer.lr": 1e-2, "trainer.warmup_steps": 1, **overrides})
    policy = Qwen2ForCausalLM.from_pretrained(assets.policy_dir)
    return build_trainer(cfg, policy, tok, world.train[:4], search=search or bm25)


def _params(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}


def _nan_loss(*args, **kwargs):
    return torch.tensor(float("nan")), {}


def test_nan_loss_is_skipped_logged_and_counted(toy, tmp_path, monkeypatch, caplog):
    trainer = _trainer(toy, tmp_path)
    before = _params(trainer)
    monkeypatch.setattr("zerosearch.rl.trainer.masked_pg_loss", _nan_loss)
    with caplog.at_level(logging.WARNING, logger="zerosearch.trainer"):
        row = trainer.train_step()
    n_minibatches = trainer.tc.ppo_epochs * min(trainer.tc.mini_batches, 4)
    assert row["skipped_updates"] == n_minibatches == 2
    assert any("non-finite" in r.getMessage() for r in caplog.records)
    after = _params(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nan_gradient_is_skipped_and_weights_unchanged(toy, tmp_path, monkeypatch):
    """A finite loss whose gradient is inf/NaN (sqrt at 0) must not reach the optimiser either."""
    import zerosearch.rl.trainer as trainer_mod

    real = trainer_mod.masked_pg_loss

    def poisoned(hidden, *args, **kwargs):
        loss, m = real(hidden, *args, **kwargs)
        return loss + torch.sqrt((hidden - hidden.detach()).sum().abs()), m

    trainer = _trainer(toy, tmp_path)
    before = _params(trainer)
    monkeypatch.setattr(trainer_mod, "masked_pg_loss", poisoned)
    row = trainer.train_step()
    assert row["skipped_updates"] == 2
    assert all(torch.equal(before[k], v) for k, v in _params(trainer).items())


def test_nan_loss_with_stop_raises_and_saves_the_batch(toy, tmp_path, monkeypatch):
    trainer = _trainer(toy, tmp_path, **{"trainer.on_nonfinite": "stop"})
    monkeypatch.setattr("zerosearch.rl.trainer.masked_pg_loss", _nan_loss)
    with pytest.raises(NonFiniteLossError, match="step 0"):
        trainer.train_step()
    saved = list(tmp_path.glob("nonfinite-*.pt"))
    assert len(saved) == 1
    batch = torch.load(saved[0])
    assert batch["ids"].dim() == 2 and batch["mask"].dtype == torch.bool and batch["mask"].any()


def test_trainer_counts_search_fallbacks(toy, tmp_path):
    """Every search against a dead backend is a fallback and shows up in the step's metrics."""
    _, _, tok, _ = toy
    trainer = _trainer(toy, tmp_path, search=Backend(fail=TimeoutError("simulator hung")))
    script = ids(tok, "<search> capital of a </search>")
    # Each of the 4 rows searches in turn 1, then writes whatever it wants in the final turn.
    trainer.runner.generator = Script([script] * 4 + [ids(tok, "<answer> a </answer>")] * 4)
    row = trainer.train_step()
    assert row["fallbacks"] == 4 and row["searches"] == 1.0


# ================================================================ checkpoints and metrics files


def _state(step: int) -> dict:
    return {"step": step, "w": torch.full((3,), float(step))}


def test_checkpoints_keep_last_k(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, _state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000005"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004", "step-00000005"]
    save_checkpoint(tmp_path, 6, _state(6), keep=0)  # keep <= 0: keep everything
    assert len(list_checkpoints(tmp_path)) == 3


def test_crash_debris_is_ignored_then_cleaned(tmp_path):
    save_checkpoint(tmp_path, 1, _state(1))
    # what a writer killed at various points leaves behind:
    torn_dir = tmp_path / ".tmp-step-00000002-4242"  # temp dir with a half-written state file
    torn_dir.mkdir()
    (torn_dir / ".state.pt.tmp-4242").write_bytes(b"PK\x03\x04 truncated")
    complete_tmp = tmp_path / ".tmp-step-00000003-4243"  # complete temp dir, never renamed
    complete_tmp.mkdir()
    torch.save(_state(3), complete_tmp / "state.pt")
    no_state = tmp_path / "step-00000004"  # final name but only a temp file inside
    no_state.mkdir()
    (no_state / "state.pt.tmp").write_bytes(b"\x80\x02 truncated")
    (tmp_path / "step-00000005.tmp").mkdir()  # look-alike names never count
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "step-00000001" and state["step"] == 1

    save_checkpoint(tmp_path, 2, _state(2), keep=5)
    assert not list(tmp_path.glob(".tmp-step-*"))  # the next successful save removes temp debris
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001", "step-00000002"]


def test_unreadable_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    save_checkpoint(tmp_path, 1, _state(1))
    newest = save_checkpoint(tmp_path, 2, _state(2))
    data = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(data[: len(data) // 3])  # damaged after the fact
    with caplog.at_level(logging.WARNING, logger="zerosearch.checkpoint"):
        path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "step-00000001" and torch.equal(state["w"], torch.full((3,), 1.0))
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert load_latest_checkpoint(tmp_path / "missing") is None


def test_checkpoint_write_failure_leaves_previous_intact(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, _state(1))

    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("zerosearch.runtime.checkpoint.torch.save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, _state(2))
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    assert load_latest_checkpoint(tmp_path)[1]["step"] == 1


def test_metrics_restart_drops_stale_rows_and_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "reward": 0.1}) + "\n" + json.dumps({"step": 1, "reward": 0.2}) + "\n"
                    + '{"step": 2, "rew')  # a killed writer's torn last line
    assert [r["step"] for r in read_metrics(path)] == [0, 1]  # readers skip the torn line
    logger = MetricsLogger(path)  # a restarted run (no checkpoint to resume) logs step 1 again
    logger.log({"step": 1, "reward": 0.5})
    logger.log({"step": 2, "reward": 0.6})
    assert read_metrics(path) == [{"step": 0, "reward": 0.1}, {"step": 1, "reward": 0.5}, {"step": 2, "reward": 0.6}]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 3


def test_metrics_torn_line_alone_is_removed_before_appending(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "reward": 0.1}) + "\n" + '{"step": 1, "re')
    MetricsLogger(path).log({"step": 1, "reward": 0.3})
    assert [json.loads(ln) for ln in path.read_text().splitlines()] == [
        {"step": 0, "reward": 0.1}, {"step": 1, "reward": 0.3}]
    assert not os.path.exists(str(path) + ".tmp")


# ================================================================ a run's files lost or unwritable mid-run


def test_deleted_metrics_then_resume_warns_that_the_file_restarted(toy, tmp_path, caplog):
    first = _trainer(toy, tmp_path, **{"trainer.steps": 3, "trainer.checkpoint_every": 1})
    first.tc.steps = 2  # stop after the checkpoint of step 2, as a killed run would
    first.fit(progress=False)
    (tmp_path / "metrics.jsonl").unlink()
    resumed = _trainer(toy, tmp_path, **{"trainer.steps": 3, "trainer.checkpoint_every": 1})
    with caplog.at_level(logging.WARNING, logger="zerosearch.runtime.metrics"):
        assert resumed.resume() and resumed.step == 2
    [warning] = [r.getMessage() for r in caplog.records if "metrics.jsonl" in r.getMessage()]
    assert "restarted" in warning and "2 steps (0..1)" in warning
    resumed.fit(progress=False)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [2]


class _HalfWriter:
    """A file on a disk that fills up: the write stops half-way and raises ENOSPC."""

    def __init__(self, f) -> None:
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


class BrokenDisk:
    """From `break_now()` on, writes under `root` fail as on a full disk (writes stop half-way with ENOSPC) or a
    read-only one (opening for writing and mkdir raise EROFS). The run's JSONL and checkpoint writers see it."""

    def __init__(self, monkeypatch, root, kind: str) -> None:
        self.root, self.kind, self.broken = str(root), kind, False
        real_open, real_mkdir = builtins.open, os.mkdir

        def fake_open(path, mode="r", *args, **kwargs):
            if self._hit(path) and any(c in mode for c in "wax+"):
                if kind == "readonly":
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
                return _HalfWriter(real_open(path, mode, *args, **kwargs))
            return real_open(path, mode, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if kind == "readonly" and self._hit(path):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_mkdir(path, *args, **kwargs)

        for module in (jsonl_mod, checkpoint_mod):
            monkeypatch.setattr(module, "open", fake_open, raising=False)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)

    def _hit(self, path) -> bool:
        return self.broken and str(path).startswith(self.root)

    def break_now(self) -> None:
        self.broken = True


@pytest.mark.parametrize("kind", ["full", "readonly"])
@pytest.mark.parametrize("where", ["metrics", "checkpoint"])
def test_unwritable_out_dir_mid_run_is_one_line_then_resume_continues(toy, tmp_path, monkeypatch, capsys, kind,
                                                                      where):
    assets = toy[0]
    out = tmp_path / "run"
    args = ["train", "--quiet", f"out_dir={out}", f"model.policy_path={assets.policy_dir}",
            f"model.tokenizer_path={assets.tokenizer_dir}", f"data.train_path={assets.train_path}",
            f"data.corpus_path={assets.corpus_path}", "search.backend=bm25", "search.top_k=2",
            "rollout.n_samples=2", "rollout.max_turns=1", "rollout.max_new_tokens=4", "trainer.batch_questions=2",
            "trainer.mini_batches=1", "trainer.steps=2", "trainer.checkpoint_every=1", "trainer.warmup_steps=1"]
    disk = BrokenDisk(monkeypatch, out, kind)
    if where == "metrics":  # the disk breaks once the checkpoint of step 1 is saved: step 1's metrics line fails
        real_save = checkpoint_mod.save_checkpoint
        monkeypatch.setattr("zerosearch.rl.trainer.save_checkpoint",
                            lambda *a, **k: (real_save(*a, **k), disk.break_now())[0])
        failing = out / "metrics.jsonl"
    else:  # the disk breaks once step 0's metrics are logged: the checkpoint of step 1 fails
        real_log = MetricsLogger.log
        monkeypatch.setattr(MetricsLogger, "log", lambda self, row: (real_log(self, row), disk.break_now())[0])
        failing = out / "checkpoints" / "step-00000001" / "state.pt"
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(failing) in err and "--resume" in err
    assert ("No space left" if kind == "full" else "Read-only") in err
    assert not list(out.glob("checkpoints/.tmp-*"))  # a failed checkpoint leaves no temporary directory

    monkeypatch.undo()  # space freed, or the file system remounted writable
    assert main([*args, "--resume"]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # the half-written line is gone
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000001", "step-00000002"]
