"""Mixed precision by default on CUDA: `model.dtype=auto` resolves to fp32 master weights with bf16 compute,
the training forward and both generators then compute in bf16, and `validate` says so before a model loads.

CUDA is not needed to check the wiring: the same code runs on CPU when bf16 compute is asked for explicitly
(CPU autocast and bf16 matmuls exist), which is what these tests do."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from zerosearch.config import RunConfig
from zerosearch.generation import EngineGenerator, HFGenerator, SamplingParams
from zerosearch.hf.loading import resolve_dtypes
from zerosearch.rl.forward import hidden_and_head, sequence_logprobs, set_compute_dtype
from zerosearch.validate import validate_config


def _model() -> Qwen2ForCausalLM:
    cfg = Qwen2Config(vocab_size=53, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
                      eos_token_id=1, initializer_range=0.2)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Qwen2ForCausalLM(cfg).eval()


def test_default_config_computes_in_bf16_on_cuda_and_fp32_on_cpu():
    cfg = RunConfig()
    assert cfg.model.dtype == "auto"
    assert resolve_dtypes(cfg.model.dtype, "cuda") == (torch.float32, torch.bfloat16)
    assert resolve_dtypes(cfg.model.dtype, "cuda:1") == (torch.float32, torch.bfloat16)
    assert resolve_dtypes(cfg.model.dtype, "cpu") == (torch.float32, torch.float32)
    assert resolve_dtypes("float32", "cuda") == (torch.float32, torch.float32)
    assert resolve_dtypes("bfloat16", "cpu") == (torch.bfloat16, torch.bfloat16)
    with pytest.raises(ValueError, match="model.dtype"):
        resolve_dtypes("fp8", "cuda")


def test_validate_reports_the_dtypes_it_will_use():
    cfg = RunConfig(device="cuda")
    notes = "\n".join(validate_config(cfg).notes)
    assert "trained weights float32, compute bfloat16" in notes
    cfg.device = "cpu"
    assert "trained weights float32, compute float32" in "\n".join(validate_config(cfg).notes)


def test_training_forward_computes_in_bf16_over_fp32_master_weights():
    model = _model()
    ids = torch.randint(3, 53, (3, 9), generator=torch.Generator().manual_seed(1))
    attn, mask = torch.ones_like(ids), torch.ones(3, 8, dtype=torch.bool)
    with torch.no_grad():
        want = sequence_logprobs(model, ids, attn, mask)  # fp32 reference
    set_compute_dtype(model, torch.bfloat16)
    hidden, head = hidden_and_head(model, ids, attn)
    assert hidden.dtype == head.dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the master weights stay fp32
    lp = sequence_logprobs(model, ids, attn, mask)
    lp.sum().backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
    torch.testing.assert_close(lp.detach(), want, atol=0.15, rtol=0.05)  # bf16 rounding, not a different model
    assert not torch.equal(lp.detach(), want)  # and it really computed in bf16


@pytest.mark.parametrize("cls", [EngineGenerator, HFGenerator])
def test_generators_compute_in_the_compute_dtype(cls):
    model = _model()
    prompts = [[5, 6, 7, 8], [9, 10, 11], [12, 13]]
    greedy = SamplingParams(greedy=True)
    mixed = cls(model, pad_id=0, compute_dtype=torch.bfloat16).generate(prompts, max_new_tokens=6, sampling=greedy)
    fp32 = cls(model, pad_id=0).generate(prompts, max_new_tokens=6, sampling=greedy)
    assert next(model.parameters()).dtype == torch.float32  # generation never touches the master weights
    first_mixed = torch.tensor([lp[0] for lp in mixed.logprobs])
    first_fp32 = torch.tensor([lp[0] for lp in fp32.logprobs])
    assert not torch.equal(first_mixed, first_fp32)  # computed in bf16 ...
    torch.testing.assert_close(first_mixed, first_fp32, atol=0.1, rtol=0.05)  # ... by the same model


def test_engine_generates_from_a_bf16_copy_of_the_weights():
    model = _model()
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    greedy = SamplingParams(greedy=True)
    gen = EngineGenerator(model, pad_id=0, compute_dtype=torch.bfloat16)
    got = gen.generate(prompts, max_new_tokens=6, sampling=greedy)
    assert gen.engine.model.weights().embed.dtype == torch.bfloat16
    copy = _model().to(torch.bfloat16)
    copy.model.rotary_emb.inv_freq = model.model.rotary_emb.inv_freq.clone()  # RoPE tables stay fp32, as in mixed
    want = EngineGenerator(copy, pad_id=0).generate(prompts, max_new_tokens=6, sampling=greedy)
    assert got.token_ids == want.token_ids and got.logprobs == want.logprobs


def test_engine_refreshes_its_bf16_copy_after_an_update():
    model = _model()
    gen = EngineGenerator(model, pad_id=0, compute_dtype=torch.bfloat16)
    first = gen.engine.model.weights()
    assert gen.engine.model.weights() is first  # unchanged weights: the copy is reused
    with torch.no_grad():
        model.model.norm.weight.mul_(2.0)  # an in-place update, as an optimizer step makes
    second = gen.engine.model.weights()
    assert second is not first
    torch.testing.assert_close(second.final_norm, (model.model.norm.weight.detach()).to(torch.bfloat16))
