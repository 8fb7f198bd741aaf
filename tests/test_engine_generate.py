"""Engine generation against Hugging Face `generate` on tiny random Llama / Qwen2 models.

Models run in float64 on both sides so that near-ties in the greedy argmax cannot flip because of
summation order; any mismatch is then a real bug (positions, masking, RoPE, prefix merge, cache slots).
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from zerosearch.engine import GenerationEngine, SamplingParams, common_prefix_len
from zerosearch.engine.models import LeanCausalLM
from zerosearch.generation import EngineGenerator, HFGenerator

VOCAB = 97


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is fastest and avoids spin-waiting on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _model(kind: str) -> torch.nn.Module:
    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=1,
                  initializer_range=0.2)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if kind == "qwen2" else 1)
        if kind == "qwen2":
            m = Qwen2ForCausalLM(Qwen2Config(**common))
            for layer in m.model.layers:  # random (non-zero) q/k/v biases so they are exercised
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.data.normal_(0, 0.3)
        else:
            m = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True, rope_theta=500000.0))
    return m.double().eval()


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    return _model(request.param)


def _prompts(shared: int, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(3, VOCAB, (shared,), generator=g).tolist()
    return [prefix + torch.randint(3, VOCAB, (k,), generator=g).tolist() for k in lengths]


def _hf_greedy(model, prompts, max_new, eos=None):
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        att[i, width - len(p) :] = 1
    out = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=max_new, do_sample=False, pad_token_id=0,
                         eos_token_id=eos)  # fmt: skip
    rows = out[:, width:].tolist()
    if eos is not None:  # HF pads finished rows; cut after the first stop id
        stop = set(eos)
        cut = []
        for r in rows:
            k = next((j + 1 for j, t in enumerate(r) if t in stop), len(r))
            cut.append(r[:k])
        rows = cut
    return rows


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_greedy_matches_hf_generate(model, shared_prefix):
    prompts = _prompts(9, [1, 5, 12, 3])
    want = _hf_greedy(model, prompts, 14)
    assert len({tuple(r) for r in want}) > 1  # the rows really differ
    got = GenerationEngine(LeanCausalLM.from_hf(model)).generate(
        prompts, max_new_tokens=14, sampling=SamplingParams(greedy=True), shared_prefix=shared_prefix
    )
    assert got.token_ids == want


def test_greedy_matches_hf_without_common_prefix(model):
    prompts = _prompts(0, [2, 7, 4], seed=3)
    assert common_prefix_len(prompts) == 0
    got = GenerationEngine(LeanCausalLM.from_hf(model)).generate(prompts, max_new_tokens=10,
                                                                 sampling=SamplingParams(greedy=True))  # fmt: skip
    assert got.token_ids == _hf_greedy(model, prompts, 10)


def test_stop_ids_budgets_and_n_samples(model):
    prompts = _prompts(6, [2, 8, 5], seed=1)
    free = _hf_greedy(model, prompts, 12)
    stop = [free[0][4], free[1][2]]  # tokens known to occur, so rows stop early
    want = _hf_greedy(model, prompts, 12, eos=stop)
    eng = GenerationEngine(LeanCausalLM.from_hf(model), sync_every=3)
    got = eng.generate(prompts, max_new_tokens=12, n=2, sampling=SamplingParams(greedy=True), stop_ids=stop)
    assert got.token_ids == [r for r in want for _ in range(2)]
    assert got.stopped[0] and got.stopped[2]
    # per-prompt budgets cut exactly (no stop ids)
    got = eng.generate(prompts, max_new_tokens=[3, 12, 1], sampling=SamplingParams(greedy=True))
    assert got.token_ids == [free[0][:3], free[1], free[2][:1]]
    assert got.stopped == [False, False, False]


def test_engine_generator_matches_hf_generator_greedy(model):
    prompts = _prompts(5, [3, 6], seed=2)
    free = _hf_greedy(model, prompts, 8)
    stops = [free[1][3]]
    kw = dict(max_new_tokens=[8, 5], stop_ids=stops, sampling=SamplingParams(greedy=True))
    hf = HFGenerator(model, pad_id=0).generate(prompts, **kw)
    eng = EngineGenerator(model, pad_id=0).generate(prompts, **kw)
    assert eng.token_ids == hf.token_ids
    for a, b in zip(eng.logprobs, hf.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


def test_sampling_is_seeded_and_logprobs_are_exact(model):
    prompts = _prompts(4, [2, 3], seed=4)
    lean = LeanCausalLM.from_hf(model)
    eng = GenerationEngine(lean)
    params = SamplingParams(temperature=0.7, top_p=0.9)
    a = eng.generate(prompts, max_new_tokens=6, n=3, sampling=params, seed=11)
    b = eng.generate(prompts, max_new_tokens=6, n=3, sampling=params, seed=11)
    assert a.token_ids == b.token_ids
    # log-probs equal a teacher-forced HF forward at temperature 0.7
    for r, (ids, lps) in enumerate(zip(a.token_ids, a.logprobs)):
        ref = _teacher_forced_logprobs(model, prompts[r // 3], ids, 0.7)
        assert torch.allclose(torch.tensor(lps, dtype=torch.float64), ref, atol=1e-5)


def _teacher_forced_logprobs(model, prompt, ids, temperature=1.0):
    full = torch.tensor([prompt + ids])
    logits = model(full).logits[0, len(prompt) - 1 : -1] / temperature
    return torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(ids)[:, None])[:, 0]


def test_finished_rows_are_compacted_away(model):
    """Rows end at very different steps: the batch shrinks at the host checks, and every row still matches HF."""
    prompts = _prompts(5, [3, 9, 1, 6, 4, 2], seed=7)
    budgets = [1, 20, 2, 3, 17, 2]
    free = _hf_greedy(model, prompts, 20)
    eng = GenerationEngine(LeanCausalLM.from_hf(model), sync_every=2)
    got = eng.generate(prompts, max_new_tokens=budgets, n=2, sampling=SamplingParams(greedy=True))
    assert got.token_ids == [free[i][:b] for i, b in enumerate(budgets) for _ in range(2)]
    sizes = eng.last_batch_sizes
    # Checks after steps 2, 4, 6, ...: at step 2 the budgets 1, 2, 2 are spent (6 of 12 rows live, <= half:
    # compact); at 4 budget 3 too (4 of 6 live: keep going); at 18 budget 17 (2 of 4 live: compact).
    assert sizes == [12, 6, 2]
    for r, (ids, lps) in enumerate(zip(got.token_ids, got.logprobs)):
        ref = _teacher_forced_logprobs(model, prompts[r // 2], ids)
        assert torch.allclose(torch.tensor(lps, dtype=torch.float64), ref, atol=1e-5)

    # Sampled rows after a compaction: their log-probs are still those of their own prefix (right KV rows,
    # positions and slots), and a stop id ends rows early so the batch shrinks.
    params = SamplingParams(temperature=0.8)
    stop = [free[1][0], free[4][1]]
    got = eng.generate(prompts, max_new_tokens=budgets, n=3, sampling=params, stop_ids=stop, seed=5)
    assert len(eng.last_batch_sizes) >= 2
    for r, (ids, lps) in enumerate(zip(got.token_ids, got.logprobs)):
        assert 1 <= len(ids) <= budgets[r // 3]
        assert not any(t in stop for t in ids[:-1])  # cut after the first stop id
        ref = _teacher_forced_logprobs(model, prompts[r // 3], ids, 0.8)
        assert torch.allclose(torch.tensor(lps, dtype=torch.float64), ref, atol=1e-5)

    off = GenerationEngine(LeanCausalLM.from_hf(model), sync_every=2, compact_below=0.0)
    off.generate(prompts, max_new_tokens=budgets, n=2, sampling=SamplingParams(greedy=True))
    assert off.last_batch_sizes == [12]
    with pytest.raises(ValueError, match="compact_below"):
        GenerationEngine(LeanCausalLM.from_hf(model), compact_below=1.0)


def test_engine_references_live_parameters(model):
    lean = LeanCausalLM.from_hf(model)
    assert lean.weights().layers[0].q_w.data_ptr() == model.model.layers[0].self_attn.q_proj.weight.data_ptr()
    prompts = _prompts(3, [2, 4], seed=5)
    before = GenerationEngine(lean).generate(prompts, max_new_tokens=6, sampling=SamplingParams(greedy=True))
    weight = model.model.layers[0].mlp.up_proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():  # an in-place update, as an optimizer step does
        weight.mul_(-3.0)
    try:
        after = GenerationEngine(lean).generate(prompts, max_new_tokens=6, sampling=SamplingParams(greedy=True))
        want = _hf_greedy(model, prompts, 6)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert before.token_ids != after.token_ids
    assert after.token_ids == want


def test_from_safetensors_matches_hf(tmp_path):
    model = _model("qwen2").float()
    model.save_pretrained(tmp_path)
    lean = LeanCausalLM.from_safetensors(str(tmp_path))
    prompts = _prompts(4, [3, 6], seed=6)
    got = GenerationEngine(lean).generate(prompts, max_new_tokens=8, sampling=SamplingParams(greedy=True))
    ref = GenerationEngine(LeanCausalLM.from_hf(model)).generate(prompts, max_new_tokens=8,
                                                                 sampling=SamplingParams(greedy=True))  # fmt: skip
    assert got.token_ids == ref.token_ids


def test_engine_complete_matches_hf_complete_greedy():
    from zerosearch.toy.models import init_model, tiny_qwen2_config
    from zerosearch.toy.tokenizer import build_tokenizer

    texts = ["the quick brown fox jumps over the lazy dog", "query capital of france answer paris documents"]
    tok = build_tokenizer(texts)
    model = init_model(tiny_qwen2_config(len(tok), role="simulator", initializer_range=0.2), seed=0).double()
    prompts = ["the quick brown fox", "query capital of france answer paris", "the lazy dog jumps over"]
    kw = dict(max_new_tokens=9, sampling=SamplingParams(greedy=True), stop=[" dog"])
    want = HFGenerator(model, tok).complete(prompts, **kw)
    got = EngineGenerator(model, tok).complete(prompts, **kw)
    assert got == want
    assert any(w.text.strip() for w in want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_recaptured_after_compaction_matches_eager():
    model = _model("qwen2").float().cuda()
    prompts = _prompts(5, [3, 9, 1, 6, 4, 2], seed=7)
    budgets = [1, 20, 2, 3, 17, 2]
    runs = []
    for graph in (True, False):
        eng = GenerationEngine(LeanCausalLM.from_hf(model), sync_every=2, cuda_graph=graph)
        runs.append(eng.generate(prompts, max_new_tokens=budgets, n=2, sampling=SamplingParams(greedy=True)))
        assert eng.last_batch_sizes == [12, 6, 2]
    assert runs[0].token_ids == runs[1].token_ids
