"""The one Generator contract, run against both implementations (the HF reference and the engine).

Rollouts rely on it: greedy outputs are the same whichever backend runs, every row is cut after its first stop
id or at its own budget, `n` samples per prompt come back in prompt-major order, and the log-probs returned
with sampled tokens equal the teacher-forced log-probs the trainer recomputes (`rl.forward.sequence_logprobs`,
an independent code path through the HF model). Models run in float64 so near-ties cannot flip a greedy argmax.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from zerosearch.generation import EngineGenerator, Generator, HFGenerator, SamplingParams
from zerosearch.rl.batch import make_batch
from zerosearch.rl.forward import sequence_logprobs

VOCAB = 61
GENERATORS = {"hf": HFGenerator, "engine": EngineGenerator}


@pytest.fixture(scope="module")
def model() -> Qwen2ForCausalLM:
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=80, max_position_embeddings=128,
                      pad_token_id=0, eos_token_id=1,
                      bos_token_id=1, initializer_range=0.2)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return Qwen2ForCausalLM(cfg).double().eval()


def _prompts(seed: int, lengths=(3, 7, 5)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(3, VOCAB, (6,), generator=g).tolist()
    return [shared + torch.randint(3, VOCAB, (k,), generator=g).tolist() for k in lengths]


def _teacher_forced(model, prompts, outs, n, temperature):
    """Log-probs of each generated token given its prompt and the tokens before it, from the HF forward."""
    rows = [list(prompts[r // n]) for r in range(len(outs))]
    batch = make_batch(rows, outs, [[True] * len(o) for o in outs], pad_id=0)
    with torch.no_grad():
        lp = sequence_logprobs(model, batch.ids, batch.attn, batch.mask, temperature=temperature)
    return [lp[r][batch.mask[r]].tolist() for r in range(len(outs))]


@pytest.mark.parametrize("name", list(GENERATORS))
def test_is_a_generator(model, name):
    assert isinstance(GENERATORS[name](model, pad_id=0), Generator)


def test_greedy_outputs_equal_across_backends(model):
    prompts = _prompts(0)
    greedy = SamplingParams(greedy=True)
    free = HFGenerator(model, pad_id=0).generate(prompts, max_new_tokens=10, sampling=greedy).token_ids
    stop = [free[0][3], free[2][1]]  # tokens that occur, so some rows stop early
    outs = {name: cls(model, pad_id=0).generate(prompts, max_new_tokens=[10, 4, 10], sampling=greedy, stop_ids=stop,
                                                n=2)
            for name, cls in GENERATORS.items()}  # fmt: skip
    want_ids, want_stopped = [], []
    for r in range(6):  # greedy with stops = the free greedy run, cut after a stop id or at the prompt's budget
        row, budget = free[r // 2], [10, 4, 10][r // 2]
        hit = next((j for j, t in enumerate(row[:budget]) if t in stop), None)
        want_ids.append(row[: budget if hit is None else hit + 1])
        want_stopped.append(hit is not None)
    for name, got in outs.items():
        assert got.token_ids == want_ids, name
        assert got.stopped == want_stopped, name
    assert any(want_stopped) and not all(want_stopped)


@pytest.mark.parametrize("name", list(GENERATORS))
@pytest.mark.parametrize("greedy", [True, False])
def test_logprobs_equal_teacher_forced(model, name, greedy):
    prompts = _prompts(1)
    params = SamplingParams(greedy=True) if greedy else SamplingParams(temperature=0.7)
    out = GENERATORS[name](model, pad_id=0).generate(prompts, max_new_tokens=[6, 9, 4], sampling=params, n=2,
                                                     seed=5)  # fmt: skip
    assert [len(t) for t in out.token_ids] == [len(lp) for lp in out.logprobs]
    want = _teacher_forced(model, prompts, out.token_ids, 2, 1.0 if greedy else 0.7)
    for got, ref in zip(out.logprobs, want):
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("name", list(GENERATORS))
def test_seeded_sampling_repeats(model, name):
    gen = GENERATORS[name](model, pad_id=0)
    kw = dict(max_new_tokens=8, sampling=SamplingParams(temperature=1.3, top_p=0.9), n=3, seed=17)
    a, b = gen.generate(_prompts(2), **kw), gen.generate(_prompts(2), **kw)
    assert a.token_ids == b.token_ids
    assert len({tuple(t) for t in a.token_ids}) > 1  # samples of one prompt differ


def test_cli_serve_uses_the_configured_backend(monkeypatch, tmp_path):
    """`zerosearch simulate --serve` serves the generator that `generation.backend` names."""
    from zerosearch.cli import main
    from zerosearch.search import server
    from zerosearch.toy.assets import ensure_toy_assets

    assets = ensure_toy_assets(tmp_path / "cache", seed=0)
    served = []
    monkeypatch.setattr(server, "serve", lambda completer, **kw: served.append((completer, kw)))
    for backend, cls in (("engine", EngineGenerator), ("hf", HFGenerator)):
        code = main(["simulate", "--serve", "--port", "0", "--quiet", f"model.simulator_path={assets.simulator_dir}",
                     f"generation.backend={backend}", "search.model=toy-sim"])
        assert code == 0
        completer, kw = served[-1]
        assert type(completer) is cls and kw["model_name"] == "toy-sim"
        [c] = completer.complete(["capital of melbrook"], max_new_tokens=3, sampling=SamplingParams(greedy=True))
        assert c.prompt_tokens > 0 and c.completion_tokens <= 3
