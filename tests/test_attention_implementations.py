"""Attention implementation choice, and the "xformers" implementation checked against SDPA.

xFormers has no CPU kernels, so its entry points are replaced by a float64 stand-in that follows the
documented contract of `xformers.ops.memory_efficient_attention` (BMHK tensors, query/key/value with the
same head count, an additive bias tensor of shape [B, H, Mq, Mk] in the query's dtype, or a
`LowerTriangularMask` / `BlockDiagonalCausalMask.from_seqlens` object) and refuses anything else. What is
under test is our side: the layout changes, grouped-query heads, the masks chosen for padding, packing and
cached decoding, and the registration with transformers, compared with SDPA in float64 on values,
gradients and greedy generations.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from collections import Counter

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from zerosearch.hf import load_causal_lm, resolve_attn_implementation
from zerosearch.hf.xformers_attention import packed_sequence_lengths, xformers_attention_forward
from zerosearch.rl.forward import decoder_of, packed_decoder_hidden

VOCAB = 61


class _LowerTriangularMask:
    pass


class _BlockDiagonalCausalMask:
    def __init__(self, seqlens: list[int]) -> None:
        self.seqlens = list(seqlens)

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen=None):
        assert kv_seqlen is None and all(isinstance(n, int) and n > 0 for n in q_seqlen)
        return cls(q_seqlen)


class _XformersStandIn:
    """The stand-in's `memory_efficient_attention`; counts the bias kinds it was called with."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, query, key, value, attn_bias=None, p=0.0, scale=None):
        assert query.dim() == key.dim() == value.dim() == 4, "BMHK only"
        b, mq, h, d = query.shape
        mk = key.shape[1]
        assert key.shape == value.shape == (b, mk, h, d), "query, key and value need the same head count"
        assert p == 0.0
        scores = torch.einsum("bqhd,bkhd->bhqk", query, key) * (d**-0.5 if scale is None else scale)
        allowed = torch.ones(mq, mk, dtype=torch.bool)
        if attn_bias is None:
            self.calls["none"] += 1
        elif isinstance(attn_bias, _LowerTriangularMask):
            self.calls["causal"] += 1
            allowed = torch.ones(mq, mk, dtype=torch.bool).tril()  # top-left aligned, as xFormers documents
        elif isinstance(attn_bias, _BlockDiagonalCausalMask):
            self.calls["block_diagonal"] += 1
            assert b == 1 and sum(attn_bias.seqlens) == mq == mk, "block-diagonal masks take one packed row"
            allowed = torch.block_diag(*[torch.ones(n, n, dtype=torch.bool).tril() for n in attn_bias.seqlens])
        else:
            self.calls["tensor"] += 1
            assert isinstance(attn_bias, torch.Tensor) and attn_bias.dtype == query.dtype
            assert attn_bias.shape == (b, h, mq, mk)
            scores = scores + attn_bias
        scores = scores.masked_fill(~allowed, float("-inf"))
        return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), value)


@pytest.fixture
def xformers(monkeypatch: pytest.MonkeyPatch) -> _XformersStandIn:
    attention = _XformersStandIn()
    modules = {}
    for name in ("xformers", "xformers.ops", "xformers.ops.fmha", "xformers.ops.fmha.attn_bias"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        modules[name] = mod
        monkeypatch.setitem(sys.modules, name, mod)
    modules["xformers.ops"].memory_efficient_attention = attention
    modules["xformers.ops.fmha.attn_bias"].LowerTriangularMask = _LowerTriangularMask
    modules["xformers.ops.fmha.attn_bias"].BlockDiagonalCausalMask = _BlockDiagonalCausalMask
    return attention


def _save_tiny(kind: str, path) -> str:
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, max_position_embeddings=128, pad_token_id=0, eos_token_id=1,
                  initializer_range=0.2)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        cls, cfg = (Qwen2ForCausalLM, Qwen2Config) if kind == "qwen2" else (LlamaForCausalLM, LlamaConfig)
        cls(cfg(**common)).save_pretrained(path)
    return str(path)


def _pair(kind: str, tmp_path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same float64 weights loaded twice: through the "xformers" path and through SDPA."""
    path = _save_tiny(kind, tmp_path / kind)
    xf = load_causal_lm(path, "float32", "cpu", attn_implementation="xformers").double()
    ref = load_causal_lm(path, "float32", "cpu", attn_implementation="sdpa").double()
    assert xf.config._attn_implementation == "xformers" and ref.config._attn_implementation == "sdpa"
    return xf, ref


def _ragged(lengths: list[int], left_pad: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        cols = slice(width - n, width) if left_pad else slice(0, n)
        ids[b, cols] = torch.randint(2, VOCAB, (n,), generator=g)
        attn[b, cols] = 1
    return ids, attn


def _hidden_and_grads(body, ids, attn, probe, packed: bool):
    body.zero_grad()
    real = attn.bool()
    if packed:
        hidden = packed_decoder_hidden(body, ids, attn)
    else:
        hidden = body(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
    (hidden * probe)[real].sum().backward()
    return hidden[real].detach(), [p.grad.clone() for p in body.parameters()]


def test_packed_sequence_lengths():
    assert packed_sequence_lengths(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]]), 9) == [3, 2, 4]
    assert packed_sequence_lengths(torch.tensor([[0, 0, 1]]), 3) == [1, 2]
    assert packed_sequence_lengths(torch.arange(6)[None], 6) is None  # one plain sequence
    assert packed_sequence_lengths(torch.tensor([[7]]), 1) is None  # a decode step
    assert packed_sequence_lengths(torch.tensor([[0, 1, 0], [0, 1, 0]]), 3) is None  # a batch is not packed
    assert packed_sequence_lengths(None, 4) is None


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("layout", ["right_pad", "left_pad", "packed", "single"])
def test_xformers_forward_and_gradients_match_sdpa(xformers, tmp_path, kind, layout):
    xf, ref = _pair(kind, tmp_path)
    lengths = [11] if layout == "single" else [9, 3, 14, 1, 6]
    ids, attn = _ragged(lengths, left_pad=layout == "left_pad", seed=int(torch.randint(0, 10_000, ())))
    probe = torch.randn(*ids.shape, 32, dtype=torch.float64)

    want, want_grads = _hidden_and_grads(decoder_of(ref), ids, attn, probe, packed=False)
    got, got_grads = _hidden_and_grads(decoder_of(xf), ids, attn, probe, packed=layout == "packed")

    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)
    # The mask each layout must have used: a dense bias only where rows are padded, never a [T, T] one for packing.
    expected = {"right_pad": "tensor", "left_pad": "tensor", "packed": "block_diagonal", "single": "causal"}[layout]
    assert set(xformers.calls) == {expected}, xformers.calls


@pytest.mark.parametrize("lengths", [[5], [7, 3, 5]])
def test_xformers_cached_generation_matches_sdpa(xformers, tmp_path, lengths):
    xf, ref = _pair("qwen2", tmp_path)
    ids, attn = _ragged(lengths, left_pad=True, seed=int(torch.randint(0, 10_000, ())))
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None, output_scores=True,
              return_dict_in_generate=True)  # fmt: skip
    with torch.no_grad():
        got = xf.generate(input_ids=ids, attention_mask=attn, **kw)
        want = ref.generate(input_ids=ids, attention_mask=attn, **kw)
    assert torch.equal(got.sequences, want.sequences)
    for g, w in zip(got.scores, want.scores):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)
    assert xformers.calls["none"] > 0 or xformers.calls["tensor"] > 0  # decode steps went through the stand-in


@pytest.mark.parametrize("mq, mk", [(3, 7), (1, 5), (4, 4)])
def test_xformers_attention_continuing_a_cache(xformers, mq, mk):
    """Queries for the last `mq` of `mk` positions (chunked prefill, decode): causal from the bottom-right."""
    b, heads, kv_heads, d = 2, 4, 2, 8
    q = torch.randn(b, heads, mq, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, kv_heads, mk, d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b, kv_heads, mk, d, dtype=torch.float64, requires_grad=True)
    allowed = torch.tensor([[j <= i + mk - mq for j in range(mk)] for i in range(mq)])
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=allowed, scale=0.3
    ).transpose(1, 2)
    got, _ = xformers_attention_forward(None, q, k, v, None, scaling=0.3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grads_want = torch.autograd.grad((want * want).sum(), (q, k, v))
    grads_got = torch.autograd.grad((got * got).sum(), (q, k, v))
    for g, w in zip(grads_got, grads_want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_attn_implementation_choice(tmp_path, monkeypatch):
    import zerosearch.hf.loading as build

    assert resolve_attn_implementation("auto", "float32", "cpu") == "sdpa"
    assert resolve_attn_implementation("auto", "bfloat16", "cpu") == "sdpa"
    assert resolve_attn_implementation("sdpa", "float32", "cpu") == "sdpa"
    with pytest.raises(ValueError, match="attn_implementation"):
        resolve_attn_implementation("magic", "float32", "cpu")

    path = _save_tiny("qwen2", tmp_path / "m")
    assert load_causal_lm(path, "float32", "cpu", attn_implementation="eager").config._attn_implementation == "eager"
    assert load_causal_lm(path).config._attn_implementation == "sdpa"
    for name, package in (("flash_attention_2", "flash_attn"), ("xformers", "xformers")):
        if importlib.util.find_spec(package) is None:
            with pytest.raises(ValueError, match=package):
                load_causal_lm(path, "bfloat16", "cpu", attn_implementation=name)

    # "auto" on a GPU in half precision: flash-attn first, then xFormers, then SDPA; never in float32.
    for flash, xformers_present, want in ((True, True, "flash_attention_2"), (False, True, "xformers"),
                                          (False, False, "sdpa")):  # fmt: skip
        monkeypatch.setattr(build, "_flash_attn_installed", lambda flash=flash: flash)
        monkeypatch.setattr(build, "xformers_installed", lambda present=xformers_present: present)
        assert resolve_attn_implementation("auto", "bfloat16", "cuda") == want
        assert resolve_attn_implementation("auto", "float32", "cuda") == "sdpa"
