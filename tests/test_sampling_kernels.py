"""Sampling: top-k / top-p masks against a sort-based float64 reference, and draws against the target
distribution with a chi-square test (fixed seeds). Triton runs through its interpreter on CPU."""

import os

import pytest
import torch
from zerosearch.kernels import sampling as smod


def _triton_ok() -> bool:
    return smod.HAVE_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")


needs_triton = pytest.mark.skipif(not _triton_ok(), reason="triton not usable here")
CASES = [(0, 1.0), (5, 1.0), (0, 0.8), (7, 0.6), (1, 1.0), (0, 0.05)]


def _chi2_critical(df: int, z: float = 3.719) -> float:
    """Wilson–Hilferty approximation of the chi-square quantile (z = 3.719: one-sided p = 1e-4)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * a**0.5) ** 3


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    keep = probs > 0
    assert counts[~keep].sum() == 0, "a masked-out token was drawn"
    n = counts.sum().item()
    exp = probs[keep] * n
    return float(((counts[keep] - exp) ** 2 / exp).sum()), int(keep.sum()) - 1


def _logits(b=4, v=300, seed=0):
    return torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * 2.5


def test_reference_mask_rules_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15]]))
    p = smod.sampling_probs_reference(logits, 1.0, 0, 0.8)  # 0.5 + 0.3 reaches 0.8: keep {0, 2}
    assert (p > 0).tolist() == [[True, False, True, False]]
    p = smod.sampling_probs_reference(logits, 1.0, 0, 0.81)  # needs 0.15 too
    assert (p > 0).tolist() == [[True, False, True, True]]
    p = smod.sampling_probs_reference(logits, 1.0, 3, 1.0)
    assert (p > 0).tolist() == [[True, False, True, True]]


@pytest.mark.parametrize("top_k,top_p", CASES)
def test_engine_torch_mask_matches_reference(top_k, top_p):
    lg = _logits()
    got = smod._masked_probs_fast(lg / 0.7, top_k, top_p)
    ref = smod.sampling_probs_reference(lg, 0.7, top_k, top_p)
    assert torch.equal(got > 0, ref > 0)
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize("top_k,top_p", CASES)
def test_triton_mask_matches_reference(top_k, top_p):
    lg = _logits(b=3, v=150)
    seed = torch.tensor([5], dtype=torch.int64)
    tok, lp, probs = smod.triton_sample(lg, seed, temperature=0.7, top_k=top_k, top_p=top_p, return_probs=True)
    ref = smod.sampling_probs_reference(lg, 0.7, top_k, top_p)
    assert torch.equal(probs > 0, ref > 0)
    torch.testing.assert_close(probs.double(), ref, atol=1e-6, rtol=1e-5)
    assert (ref.gather(1, tok[:, None]) > 0).all()
    want_lp = torch.log_softmax(lg.double() / 0.7, -1).gather(1, tok[:, None])[:, 0]
    torch.testing.assert_close(lp.double(), want_lp, atol=1e-5, rtol=1e-5)


@needs_triton
def test_triton_greedy_is_argmax():
    lg = _logits(b=5, v=130, seed=3)
    lg[2, 7] = lg[2, 9] = lg[2].max() + 1  # tie: the first index wins, as torch.argmax
    tok, lp = smod.triton_sample(lg, torch.tensor([0]), greedy=True)
    assert tok.tolist() == torch.argmax(lg, -1).tolist()
    torch.testing.assert_close(lp, torch.log_softmax(lg, -1).gather(1, tok[:, None])[:, 0])


def _draws_torch(logits_row, n, temperature, top_k, top_p, seed):
    gen = torch.Generator().manual_seed(seed)
    tok, _ = smod.sample_reference(logits_row.expand(n, -1), temperature=temperature, top_k=top_k, top_p=top_p,
                                   generator=gen)  # fmt: skip
    return tok


def _draws_triton(logits_row, n, temperature, top_k, top_p, seed):
    tok, _ = smod.triton_sample(logits_row.expand(n, -1).contiguous(), torch.tensor([seed]), temperature=temperature,
                                top_k=top_k, top_p=top_p)  # fmt: skip
    return tok


@pytest.mark.parametrize(
    "draw,n", [(_draws_torch, 40000), pytest.param(_draws_triton, 4096, marks=needs_triton)], ids=["torch", "triton"]
)
@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (6, 0.9)])
def test_draws_follow_target_distribution(draw, n, top_k, top_p):
    row = _logits(b=1, v=12, seed=7)
    target = smod.sampling_probs_reference(row, 0.9, top_k, top_p)[0]
    counts = torch.bincount(draw(row, n, 0.9, top_k, top_p, seed=123), minlength=12).double()
    stat, df = _chi2(counts, target)
    assert stat < _chi2_critical(df), (stat, df)
    # the same test rejects a wrong target (power check: the test can fail)
    wrong = smod.sampling_probs_reference(row, 1.3, 0, 1.0)[0]  # other temperature, no truncation
    wstat, wdf = _chi2(counts, wrong)
    assert wstat > _chi2_critical(wdf), (wstat, wdf)
