"""Padding-free training forward: packed rows must give exactly the padded forward's hidden states and
gradients (float64, so any cross-sequence attention or wrong position would show), and a trainer step
must not change when packing is switched on."""

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from zerosearch.config import RunConfig, apply_overrides
from zerosearch.rl.forward import decoder_of, pack, packed_decoder_hidden, packing_enabled, set_packing, unpack

VOCAB = 61


def _model(kind: str, attn: str) -> torch.nn.Module:
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, max_position_embeddings=128, pad_token_id=0, eos_token_id=1,
                  initializer_range=0.2, attn_implementation=attn)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        cls, cfg = (Qwen2ForCausalLM, Qwen2Config) if kind == "qwen2" else (LlamaForCausalLM, LlamaConfig)
        model = cls(cfg(**common))
    return model.double()


def _ragged_batch(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(2, VOCAB, (n,), generator=g)
        attn[b, :n] = 1
    return ids, attn


def test_pack_unpack_round_trip():
    ids, attn = _ragged_batch([5, 1, 3], seed=0)
    p = pack(ids, attn)
    assert p.ids.shape == (1, 9)
    assert p.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 0, 1, 2]
    assert torch.equal(p.ids[0], ids[attn.bool()])
    restored = unpack(p.ids[..., None].double(), p, ids.shape)[..., 0].long()
    assert torch.equal(restored, ids * attn)


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="no real tokens"):
        pack(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        pack(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("attn_impl", ["sdpa", "eager"])
def test_packed_forward_matches_padded(kind, attn_impl):
    model = _model(kind, attn_impl)
    body = decoder_of(model)
    ids, attn = _ragged_batch([9, 3, 14, 1, 6], seed=int(torch.randint(0, 10_000, ())))
    real = attn.bool()
    probe = torch.randn(*ids.shape, 32, dtype=torch.float64)  # a random linear read-out of the hidden states

    padded = body(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
    (padded * probe)[real].sum().backward()
    grads_padded = [p.grad.clone() for p in body.parameters()]
    body.zero_grad()

    packed = packed_decoder_hidden(body, ids, attn)
    (packed * probe)[real].sum().backward()

    # HF's eager attention takes its softmax in float32 even for a float64 model, so the two mask shapes
    # ([T, T] block-diagonal vs [L, L] per row) round differently there; sdpa stays in float64 throughout.
    rtol, atol = (1e-9, 1e-10) if attn_impl == "sdpa" else (1e-4, 1e-4)
    torch.testing.assert_close(packed[real], padded[real], rtol=rtol, atol=atol)
    assert torch.all(packed[~real] == 0)
    for gp, p in zip(grads_padded, body.parameters()):
        torch.testing.assert_close(p.grad, gp, rtol=rtol, atol=atol)


def test_auto_packs_only_under_varlen_attention():
    def stub(impl):
        return SimpleNamespace(config=SimpleNamespace(_attn_implementation=impl))

    assert set_packing(stub("flash_attention_2"), "auto") is True
    assert set_packing(stub("xformers"), "auto") is True
    assert set_packing(stub("sdpa"), "auto") is False
    assert set_packing(stub("eager"), "auto") is False
    assert set_packing(stub("sdpa"), "on") is True
    assert set_packing(stub("flash_attention_2"), "off") is False
    with pytest.raises(ValueError, match="packed_sequences"):
        set_packing(stub("sdpa"), "yes")


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_trainer_step_unchanged_by_packing(tmp_path, algo):
    """Same seed, same rollouts: one update with packing on gives the same metrics and weights as without."""
    from zerosearch.build import build_trainer
    from zerosearch.search import BM25Search
    from zerosearch.toy.assets import ensure_toy_assets

    assets = ensure_toy_assets(tmp_path / "cache", seed=0)
    world, tok = assets.load_world(), assets.load_tokenizer()
    bm25 = BM25Search.from_jsonl(assets.corpus_path, top_k=2)
    results = {}
    for mode in ("off", "on"):
        cfg = RunConfig(out_dir=str(tmp_path / mode))
        apply_overrides(cfg, {"rollout.max_turns": 2, "rollout.max_new_tokens": 12, "rollout.n_samples": 3,
                              "trainer.batch_questions": 3, "trainer.steps": 1, "trainer.checkpoint_every": 0,
                              "trainer.algo": algo, "trainer.lr": 1e-2, "model.packed_sequences": mode})
        policy = Qwen2ForCausalLM.from_pretrained(assets.policy_dir)
        trainer = build_trainer(cfg, policy, tok, world.train[:6], search=bm25)
        assert packing_enabled(trainer.policy) is (mode == "on")
        row = trainer.fit(progress=False)[0]
        results[mode] = (row, [p.detach().clone() for p in policy.parameters()])
    (off, w_off), (on, w_on) = results["off"], results["on"]
    assert on["response_len"] == off["response_len"]  # identical rollouts
    keys = {"loss", "grad_norm"} | ({"value_loss"} if algo == "ppo" else set())
    for key in keys:
        assert on[key] == pytest.approx(off[key], rel=1e-4, abs=1e-6), key
    for a, b in zip(w_on, w_off):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
