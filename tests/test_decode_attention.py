"""Decode attention (split-KV, GQA, shared prefix) and prefill attention against float64 references.

The references here concatenate all keys and take one plain softmax, so they share no code with the
split/merge path under test. The kernels run on ``kernel_device`` (conftest): compiled on CUDA, through
Triton's interpreter on CPU (tiny shapes); results are compared on the CPU.
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
def test_split_kv_kernel_matches_float64(splits, kernel_device):
    g = torch.Generator().manual_seed(0)
    z, m, n, d = 3, 5, 70, 16
    q, k, v = (torch.randn(z, x, d, generator=g) for x in (m, n, n))
    start = torch.tensor([0, 13, 40], dtype=torch.int32)
    end = torch.tensor([70, 50, 40], dtype=torch.int32)  # last group has no keys at all
    dev = [t.to(kernel_device) for t in (q, k, v, start, end)]
    out, lse = dmod.split_kv_attention(*dev, 0.25, num_splits=splits)
    merged, mlse = attn_merge.merge_partials(out.reshape(z * m, splits, d), lse.reshape(z * m, splits))
    merged, mlse = merged.view(z, m, d).cpu(), mlse.view(z, m).cpu()
    for i in range(z):
        valid = (torch.arange(n) >= start[i]) & (torch.arange(n) < end[i])
        if valid.any():
            ro, rl = _full_softmax(q[i], k[i], v[i], valid, 0.25)
            torch.testing.assert_close(merged[i].double(), ro, atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(mlse[i].double(), rl, atol=2e-5, rtol=1e-5)
        else:
            assert torch.isneginf(mlse[i]).all() and (merged[i] == 0).all()


def _expected_split_ranges(lo: int, hi: int, splits: int, block_n: int) -> list[tuple[int, int]]:
    """The documented partition: ``[lo, hi)`` in BLOCK_N-key blocks counted from ``lo``, split s taking blocks
    ``[s * nb // S, (s + 1) * nb // S)``, the last block clipped at ``hi``."""
    nb = -(-max(hi - lo, 0) // block_n)
    return [(min(hi, lo + s * nb // splits * block_n), min(hi, lo + (s + 1) * nb // splits * block_n))
            for s in range(splits)]  # fmt: skip


# CUDA dots round p to the 16-bit input type before p @ V; the interpreter computes exact fp32 dots.
_OUT_ATOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _check_splits_and_merge(q, k, v, start, end, scale, splits):
    """Every split's partial equals a float64 softmax over the range the partition gives it, and the merge
    equals one softmax over the whole live range (rows without keys: lse = -inf, out = 0)."""
    z, m, d = q.shape
    n = k.shape[1]
    out, lse = dmod.split_kv_attention(q, k, v, start, end, scale, num_splits=splits)
    assert out.shape == (z, m, splits, d) and lse.shape == (z, m, splits)
    block_n = dmod._config(q.dtype, m, d, dmod.interpreting())["BLOCK_N"]
    atol = 2e-5 if dmod.interpreting() else _OUT_ATOL[q.dtype]
    merged, mlse = attn_merge.merge_partials(out.reshape(z * m, splits, d), lse.reshape(z * m, splits))
    merged, mlse = merged.view(z, m, d), mlse.view(z, m)
    q, k, v, start, end, out, lse, merged, mlse = (t.cpu() for t in (q, k, v, start, end, out, lse, merged, mlse))
    pos = torch.arange(n)
    for i in range(z):
        lo, hi = int(start[i]), int(end[i])
        ranges = _expected_split_ranges(lo, hi, splits, block_n)
        if hi - lo >= splits * block_n:
            assert torch.isfinite(lse[i]).all()  # a long row keeps every split busy
        for sp, (a, b) in enumerate(ranges):
            if b > a:
                ro, rl = _full_softmax(q[i], k[i], v[i], (pos >= a) & (pos < b), scale)
                torch.testing.assert_close(out[i, :, sp].double(), ro, atol=atol, rtol=1e-5)
                torch.testing.assert_close(lse[i, :, sp].double(), rl, atol=2e-5, rtol=1e-5)
            else:
                assert torch.isneginf(lse[i, :, sp]).all() and (out[i, :, sp] == 0).all()
    for i in range(z):
        valid = (pos >= start[i]) & (pos < end[i])
        if valid.any():
            ro, rl = _full_softmax(q[i], k[i], v[i], valid, scale)
            torch.testing.assert_close(merged[i].double(), ro, atol=atol, rtol=1e-5)
            torch.testing.assert_close(mlse[i].double(), rl, atol=2e-5, rtol=1e-5)
        else:
            assert torch.isneginf(mlse[i]).all() and (merged[i] == 0).all()


def _ragged(dtype, z_m_n_d, start, end, seed, dev):
    g = torch.Generator().manual_seed(seed)
    z, m, n, d = z_m_n_d
    q, k, v = (torch.randn(z, x, d, generator=g).to(dtype) for x in (m, n, n))
    start, end = torch.tensor(start, dtype=torch.int32), torch.tensor(end, dtype=torch.int32)
    return q.to(dev), k.to(dev), v.to(dev), start.to(dev), end.to(dev)


@needs_triton
@pytest.mark.parametrize("splits", [1, 4, 7])
def test_split_kv_splits_partition_ragged_live_ranges(splits, kernel_device):
    # one key; none (start == end and start > end); a long row; a long row starting late; a mid-length one
    start, end = [5, 9, 12, 0, 40, 3], [6, 9, 4, 300, 299, 100]
    q, k, v, st, en = _ragged(torch.float32, (6, 5, 300, 16), start, end, seed=4, dev=kernel_device)
    _check_splits_and_merge(q, k, v, st, en, 0.3, splits)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_split_kv_16bit_inputs_match_float64(dtype, kernel_device):
    # the reference sees the same 16-bit-rounded values, so only the kernel's arithmetic is compared
    q, k, v, st, en = _ragged(dtype, (4, 7, 200, 16), [0, 17, 30, 2], [200, 18, 30, 130], seed=5, dev=kernel_device)
    _check_splits_and_merge(q, k, v, st, en, 0.25, 4)


@needs_triton
def test_split_kv_prefix_shape_many_query_blocks(kernel_device):
    # the shared prefix: Z = Hkv groups, M = B * G queries spread over several query tiles (last one partial)
    hkv, b, grp, p = 2, 9, 8, 150
    q, k, v, st, en = _ragged(torch.float32, (hkv, b * grp, p, 16), [0, 0], [p, p], seed=6, dev=kernel_device)
    _check_splits_and_merge(q, k, v, st, en, 0.2, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not (dmod.HAVE_TRITON and torch.cuda.is_available()), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_split_kv_cuda_graph_replays_with_new_live_ranges(dtype):
    # a captured launch reads the live ranges on the device: replays follow start/end as the cache fills
    q, k, v, st, en = _ragged(dtype, (6, 8, 512, 128), [0] * 6, [1] * 6, seed=7, dev="cuda")
    splits = 5
    dmod.split_kv_attention(q, k, v, st, en, 0.1, num_splits=splits)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = dmod.split_kv_attention(q, k, v, st, en, 0.1, num_splits=splits)
    for lo, hi in [([0, 3, 0, 7, 1, 0], [1, 3, 16, 500, 512, 2]), ([2, 0, 100, 0, 0, 0], [511, 0, 400, 64, 1, 512])]:
        st.copy_(torch.tensor(lo, dtype=torch.int32))
        en.copy_(torch.tensor(hi, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        want_o, want_l = dmod.split_kv_attention(q, k, v, st, en, 0.1, num_splits=splits)
        torch.testing.assert_close(out, want_o, atol=0, rtol=0)
        torch.testing.assert_close(lse, want_l, atol=0, rtol=0)
        _check_splits_and_merge(q, k, v, st, en, 0.1, splits)


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
def test_decode_attention_with_prefix_gqa(use_triton, kv_limit, kernel_device):
    q, kc, vc, pk, pv, start, end = _decode_case()
    dq, dkc, dvc, dpk, dpv, dst, den = (t.to(kernel_device) for t in (q, kc, vc, pk, pv, start, end))
    got = decode_attention(dq, dkc, dvc, dst, den, dpk, dpv, 0.3, kv_limit=kv_limit, use_triton=use_triton).cpu()
    torch.testing.assert_close(got.double(), _decode_ref(q, kc, vc, pk, pv, start, end, 0.3), atol=2e-5, rtol=1e-5)
    no_prefix = decode_attention(dq, dkc, dvc, dst, den, None, None, 0.3, kv_limit=kv_limit,
                                 use_triton=use_triton).cpu()  # fmt: skip
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
