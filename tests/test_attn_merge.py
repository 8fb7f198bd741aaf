"""The exact log-sum-exp merge of attention partials (kernels/attn_merge.py) against a float64 softmax over the
union of the parts' keys. The kernel runs on ``kernel_device`` (conftest): compiled on CUDA, interpreted on CPU."""

import os

import pytest
import torch
from zerosearch.kernels import attn_merge


def _triton_ok() -> bool:
    return attn_merge.HAVE_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")


needs_triton = pytest.mark.skipif(not _triton_ok(), reason="triton not usable here")


def _full_softmax(q, keys, vals, valid, scale):
    """q [M, D], keys/vals [N, D], valid [N] bool → out [M, D], lse [M] in float64."""
    s = (q.double() @ keys.double().T) * scale
    s = s.masked_fill(~valid[None, :], float("-inf"))
    return torch.softmax(s, -1) @ vals.double(), torch.logsumexp(s, -1)


@needs_triton
def test_merge_kernel_matches_reference_float64(kernel_device):
    g = torch.Generator().manual_seed(1)
    out = torch.randn(6, 4, 24, generator=g)
    lse = torch.randn(6, 4, generator=g) * 3
    lse[2, 1] = float("-inf")
    lse[4] = float("-inf")
    got, glse = (t.cpu() for t in attn_merge.merge_partials(out.to(kernel_device), lse.to(kernel_device)))
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
