"""Decode attention (split-KV, GQA, shared prefix) and the log-sum-exp merge against float64 references.

The references here concatenate all keys and take one plain softmax, so they share no code with the
split/merge path under test. Triton runs through its interpreter on CPU (tiny shapes).
"""

import os

import pytest
import torch
from zerosearch.kernels import attn_merge
from zerosearch.kernels import decode_attention as dmod

from zerosearch.engine.attention import prefill_attention
from zerosearch.ops.decode_attention import decode_attention


def _triton_ok() -> bool:
    return dmod.HAVE_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")


needs_triton = pytest.mark.skipif(not _triton_ok(), reason="triton not usable here")


def _full_softmax(q, keys, vals, valid, scale):
    """q [M, D], keys/vals [N, D], valid [N] bool → out [M, D], lse [M] in float64."""
    s = (q.double() @ keys.double().T) * scale
    s = s.masked_fill(~valid[None, :], float("-inf"))
    return torch.softmax(s, -1) @ vals.double(), torch.logsumexp(s, -1)


@needs_triton
@pytest.mark.parametrize("splits", [1, 3])
def test_split_kv_kernel_matches_float64(splits):
    g = torch.Generator().manual_seed(0)
    z, m, n, d = 3, 5, 70, 16
    q, k, v = (torch.randn(z, x, d, generator=g) for x in (m, n, n))
    start = torch.tensor([0, 13, 40], dtype=torch.int32)
    end = torch.tensor([70, 50, 40], dtype=torch.int32)  # last group has no keys at all
    out, lse = dmod.split_kv_attention(q, k, v, start, end, 0.25, num_splits=splits)
    merged, mlse = attn_merge.merge_partials(out.reshape(z * m, splits, d), lse.reshape(z * m, splits))
    merged, mlse = merged.view(z, m, d), mlse.view(z, m)
    for i in range(z):
        valid = (torch.arange(n) >= start[i]) & (torch.arange(n) < end[i])
        if valid.any():
            ro, rl = _full_softmax(q[i], k[i], v[i], valid, 0.25)
            torch.testing.assert_close(merged[i].double(), ro, atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(mlse[i].double(), rl, atol=2e-5, rtol=1e-5)
        else:
            assert torch.isneginf(mlse[i]).all() and (merged[i] == 0).all()


@needs_triton
def test_merge_kernel_matches_reference_float64():
    g = torch.Generator().manual_seed(1)
    out = torch.randn(6, 4, 24, generator=g)
    lse = torch.randn(6, 4, generator=g) * 3
    lse[2, 1] = float("-inf")
    lse[4] = float("-inf")
    got, glse = attn_merge.merge_partials(out, lse)
    ref, rlse = attn_merge.merge_partials_reference(out.double(), lse.double())
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(glse.double(), rlse, atol=1e-6, rtol=1e-6)
    assert (got[4] == 0).all()
    # the merge of a split softmax equals the unsplit softmax
    q, k, v = torch.randn(3, 8, generator=g), torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    parts = [_full_softmax(q, k[a:b], v[a:b], torch.ones(b - a, dtype=torch.bool), 1.0) for a, b in [(0, 7), (7, 30)]]
    stacked_o, stacked_l = torch.stack([p[0] for p in parts], 1), torch.stack([p[1] for p in parts], 1)
    mo, ml = attn_merge.merge_partials_reference(stacked_o, stacked_l)
    fo, fl = _full_softmax(q, k, v, torch.ones(30, dtype=torch.bool), 1.0)
    torch.testing.assert_close(mo, fo)
    torch.testing.assert_close(ml, fl)


def _decode_case(seed=2, b=3, hkv=2, grp=3, s=40, p=19, d=16):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hkv * grp, d, generator=g)
    kc, vc = torch.randn(b, hkv, s, d, generator=g), torch.randn(b, hkv, s, d, generator=g)
    pk, pv = torch.randn(hkv, p, d, generator=g), torch.randn(hkv, p, d, generator=g)
    start = torch.tensor([0, 5, 11], dtype=torch.int32)[:b]
    end = torch.full((b,), 31, dtype=torch.int32)
    return q, kc, vc, pk, pv, start, end


def _decode_ref(q, kc, vc, pk, pv, start, end, scale):
    b, h, d = q.shape
    hkv = kc.shape[1]
    out = torch.empty(b, h, d, dtype=torch.float64)
    for i in range(b):
        for hh in range(h):
            kv = hh // (h // hkv)
            keys = torch.cat([pk[kv], kc[i, kv, start[i] : end[i]]])
            vals = torch.cat([pv[kv], vc[i, kv, start[i] : end[i]]])
            out[i, hh] = _full_softmax(q[i, hh][None], keys, vals, torch.ones(len(keys), dtype=torch.bool), scale)[0][0]
    return out


@pytest.mark.parametrize(
    "use_triton,kv_limit", [(False, None), (False, 31), pytest.param(True, None, marks=needs_triton)]
)
def test_decode_attention_with_prefix_gqa(use_triton, kv_limit):
    q, kc, vc, pk, pv, start, end = _decode_case()
    got = decode_attention(q, kc, vc, start, end, pk, pv, 0.3, kv_limit=kv_limit, use_triton=use_triton)
    torch.testing.assert_close(got.double(), _decode_ref(q, kc, vc, pk, pv, start, end, 0.3), atol=2e-5, rtol=1e-5)
    no_prefix = decode_attention(q, kc, vc, start, end, None, None, 0.3, kv_limit=kv_limit, use_triton=use_triton)
    empty = torch.zeros(2, 0, 16)
    torch.testing.assert_close(no_prefix.double(), _decode_ref(q, kc, vc, empty, empty, start, end, 0.3),
                               atol=2e-5, rtol=1e-5)  # fmt: skip


def test_prefill_attention_causal_left_padded_with_prefix():
    g = torch.Generator().manual_seed(3)
    b, t, hkv, grp, d, p = 2, 6, 2, 2, 8, 5
    q = torch.randn(b, t, hkv * grp, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(b, t, hkv, d, generator=g, dtype=torch.float64) for _ in range(2))
    pk, pv = (torch.randn(hkv, p, d, generator=g, dtype=torch.float64) for _ in range(2))
    start = torch.tensor([0, 2], dtype=torch.int32)
    got = prefill_attention(q, k, v, start, pk, pv, 0.5)
    for i in range(b):
        for pos in range(int(start[i]), t):
            for hh in range(hkv * grp):
                kv = hh // grp
                keys = torch.cat([pk[kv], k[i, start[i] : pos + 1, kv]])
                vals = torch.cat([pv[kv], v[i, start[i] : pos + 1, kv]])
                ref = _full_softmax(q[i, pos, hh][None], keys, vals, torch.ones(len(keys), dtype=torch.bool), 0.5)[0]
                torch.testing.assert_close(got[i, pos, hh], ref[0])
    assert torch.isfinite(got).all()  # padded query rows must stay finite (they feed masked cache slots)
