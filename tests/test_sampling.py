"""Sampling: top-k / top-p masks against a sort-based float64 reference, and draws against the target
distribution with a chi-square test (fixed seeds). The Triton sampler is also run with its vocabulary split
into several chunks per row, at ties, bf16 and edge settings, and its vocabulary passes are counted. The Triton
sampler runs on ``kernel_device`` (conftest): compiled on CUDA, through Triton's interpreter on CPU; its results
are checked on the CPU."""

import os

import pytest
import torch
from zerosearch.kernels import sampling as smod


def _triton_ok() -> bool:
    return smod.HAVE_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")


needs_triton = pytest.mark.skipif(not _triton_ok(), reason="triton not usable here")
CASES = [(0, 1.0), (5, 1.0), (0, 0.8), (7, 0.6), (1, 1.0), (0, 0.05)]


def _on(dev, fn, *args, **kwargs):
    """``fn`` with its tensor arguments on ``dev``; tensor results come back to the CPU (the references' device)."""
    move = lambda x: x.to(dev) if isinstance(x, torch.Tensor) else x
    out = fn(*map(move, args), **{k: move(v) for k, v in kwargs.items()})
    return tuple(t.cpu() for t in out) if isinstance(out, tuple) else out.cpu()


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
def test_triton_mask_matches_reference(top_k, top_p, kernel_device):
    lg = _logits(b=3, v=150)
    seed = torch.tensor([5], dtype=torch.int64)
    tok, lp, probs = _on(kernel_device, smod.triton_sample, lg, seed, temperature=0.7, top_k=top_k, top_p=top_p,
                         return_probs=True)  # fmt: skip
    ref = smod.sampling_probs_reference(lg, 0.7, top_k, top_p)
    assert torch.equal(probs > 0, ref > 0)
    torch.testing.assert_close(probs.double(), ref, atol=1e-6, rtol=1e-5)
    assert (ref.gather(1, tok[:, None]) > 0).all()
    want_lp = torch.log_softmax(lg.double() / 0.7, -1).gather(1, tok[:, None])[:, 0]
    torch.testing.assert_close(lp.double(), want_lp, atol=1e-5, rtol=1e-5)


@needs_triton
def test_triton_greedy_is_argmax(kernel_device):
    lg = _logits(b=5, v=130, seed=3)
    lg[2, 7] = lg[2, 9] = lg[2].max() + 1  # tie: the first index wins, as torch.argmax
    tok, lp = _on(kernel_device, smod.triton_sample, lg, torch.tensor([0]), greedy=True)
    assert tok.tolist() == torch.argmax(lg, -1).tolist()
    torch.testing.assert_close(lp, torch.log_softmax(lg, -1).gather(1, tok[:, None])[:, 0])


def _draws_torch(logits_row, n, temperature, top_k, top_p, seed, dev):
    gen = torch.Generator().manual_seed(seed)
    tok, _ = smod.sample_reference(logits_row.expand(n, -1), temperature=temperature, top_k=top_k, top_p=top_p,
                                   generator=gen)  # fmt: skip
    return tok


def _draws_triton(logits_row, n, temperature, top_k, top_p, seed, dev):
    tok, _ = _on(dev, smod.triton_sample, logits_row.expand(n, -1).contiguous(), torch.tensor([seed]),
                 temperature=temperature, top_k=top_k, top_p=top_p)  # fmt: skip
    return tok


@pytest.mark.parametrize(
    "draw,n", [(_draws_torch, 40000), pytest.param(_draws_triton, 4096, marks=needs_triton)], ids=["torch", "triton"]
)
@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (6, 0.9)])
def test_draws_follow_target_distribution(draw, n, top_k, top_p, kernel_device):
    row = _logits(b=1, v=12, seed=7)
    target = smod.sampling_probs_reference(row, 0.9, top_k, top_p)[0]
    counts = torch.bincount(draw(row, n, 0.9, top_k, top_p, seed=123, dev=kernel_device), minlength=12).double()
    stat, df = _chi2(counts, target)
    assert stat < _chi2_critical(df), (stat, df)
    # the same test rejects a wrong target (power check: the test can fail)
    wrong = smod.sampling_probs_reference(row, 1.3, 0, 1.0)[0]  # other temperature, no truncation
    wstat, wdf = _chi2(counts, wrong)
    assert wstat > _chi2_critical(wdf), (wstat, wdf)


# --- the radix-select / multi-chunk kernels -------------------------------------------------------------------


def _tie_closed(ref: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The reference set closed under ties: every token whose logit is >= the smallest kept logit.

    The kernel keeps all tokens tied at a top-p boundary, where the sort-based reference keeps some of them
    (in sort order); at a top-k boundary both keep all of them."""
    z = logits.double()
    return z >= torch.where(ref > 0, z, float("inf")).min(-1, keepdim=True).values


@pytest.fixture
def run(kernel_device):
    """``_sample`` with probabilities, on the kernel device, results on the CPU."""

    def call(lg, *, temperature=0.7, top_k=0, top_p=1.0, splits=None, block=None, seed=5):
        return _on(kernel_device, smod._sample, lg, torch.tensor([seed]), temperature=temperature, top_k=top_k,
                   top_p=top_p, return_probs=True, splits=splits, block=block)  # fmt: skip

    return call


@needs_triton
@pytest.mark.parametrize(
    "splits,top_k,top_p",
    [(3, 0, 1.0), (3, 40, 1.0), (3, 0, 0.9), (3, 25, 0.7), (7, 25, 0.7), (19, 40, 1.0)],
)
def test_triton_multi_chunk_matches_reference(splits, top_k, top_p, run):
    lg = _logits(b=3, v=300, seed=11)
    tok, lp, probs = run(lg, top_k=top_k, top_p=top_p, splits=splits, block=16)  # 19 blocks of 16
    ref = smod.sampling_probs_reference(lg, 0.7, top_k, top_p)
    assert torch.equal(probs > 0, ref > 0)
    torch.testing.assert_close(probs.double(), ref, atol=1e-6, rtol=1e-5)
    assert (ref.gather(1, tok[:, None]) > 0).all()
    want_lp = torch.log_softmax(lg.double() / 0.7, -1).gather(1, tok[:, None])[:, 0]
    torch.testing.assert_close(lp.double(), want_lp, atol=1e-5, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize("top_k,top_p", [(30, 1.0), (0, 0.95), (40, 0.9)])
def test_triton_kept_set_spans_chunks(top_k, top_p, run):
    v, chunk = 256, 64  # 4 chunks of 4 blocks
    lg = _logits(b=2, v=v, seed=4) / 2.5 - 4.0
    lg[:, 5::7] = 3.0 + _logits(b=2, v=v, seed=5)[:, 5::7] / 5  # the likely tokens sit in every block
    tok, _, probs = run(lg, top_k=top_k, top_p=top_p, splits=v // chunk, block=16)
    ref = smod.sampling_probs_reference(lg, 0.7, top_k, top_p)
    kept_chunks = {int(i) // chunk for i in torch.nonzero(ref[0] > 0)[:, 0]}
    assert len(kept_chunks) == v // chunk  # the premise: every chunk holds part of the kept set
    assert torch.equal(probs > 0, ref > 0)
    torch.testing.assert_close(probs.double(), ref, atol=1e-6, rtol=1e-5)
    assert (ref.gather(1, tok[:, None]) > 0).all()


@needs_triton
def test_triton_ties_at_threshold(run):
    # logits on a 0.5 grid: many exact ties, also at the k-th value and at the top-p boundary
    lg = (_logits(b=4, v=200, seed=9) * 2).round() / 2
    for top_k, top_p in [(17, 1.0), (0, 0.5), (30, 0.8)]:
        _, _, probs = run(lg, top_k=top_k, top_p=top_p, splits=2, block=16)
        ref = smod.sampling_probs_reference(lg, 0.7, top_k, top_p)
        assert torch.equal(probs > 0, _tie_closed(ref, lg)), (top_k, top_p)
        if top_p >= 1.0:  # top-k alone: the reference keeps every tie too, and here the k-th value is tied
            assert torch.equal(probs > 0, ref > 0)
            assert ((ref > 0).sum(-1) > top_k).any()
        else:  # the premise: the sort-based reference splits a tie group at the boundary somewhere
            assert not torch.equal(_tie_closed(ref, lg), ref > 0)
    # by hand: 0.4 | 0.2 0.2 0.2, top_p = 0.5 → the reference keeps one 0.2 (sort order), the kernel all three
    hand = torch.log(torch.tensor([[0.2, 0.4, 0.2, 0.2]]))
    _, _, probs = run(hand, temperature=1.0, top_p=0.5)
    assert (probs > 0).tolist() == [[True, True, True, True]]
    assert int((smod.sampling_probs_reference(hand, 1.0, 0, 0.5) > 0).sum()) == 2


@needs_triton
def test_triton_top_k_at_least_vocab_is_off(run):
    lg = _logits(b=2, v=90, seed=2)
    full = smod.sampling_probs_reference(lg, 0.7, 0, 0.9)
    for top_k in (90, 91, 1000):
        _, _, probs = run(lg, top_k=top_k, top_p=0.9, splits=3, block=16)
        assert torch.equal(probs > 0, full > 0)
        torch.testing.assert_close(probs.double(), full, atol=1e-6, rtol=1e-5)
    assert smod.vocab_passes(90, 0.9, vocab=90) == smod.vocab_passes(0, 0.9)


@needs_triton
def test_triton_tiny_top_p_keeps_only_the_argmax(run):
    lg = _logits(b=5, v=150, seed=6)
    for top_k in (0, 9):
        tok, _, probs = run(lg, top_k=top_k, top_p=1e-6, splits=3, block=16, seed=17)
        assert (probs > 0).sum(-1).tolist() == [1] * 5
        assert tok.tolist() == torch.argmax(lg, -1).tolist()
        torch.testing.assert_close(probs.gather(1, tok[:, None]), torch.ones(5, 1))


@needs_triton
def test_triton_masked_vocab_and_signed_zeros(run):
    # -inf logits (a masked vocabulary), +-0.0 ties and both signs: the key order must be the float order
    lg = _logits(b=2, v=120, seed=8)
    lg[:, 60:] = float("-inf")
    lg[0, :6] = torch.tensor([0.0, -0.0, 0.0, -0.0, -1e-30, 1e-30])
    lg[0, 6:60] = -5.0 - torch.arange(54.0)
    for top_k, top_p in [(3, 1.0), (100, 1.0), (4, 0.99)]:
        tok, _, probs = run(lg, temperature=1.0, top_k=top_k, top_p=top_p, splits=2, block=16)
        ref = smod.sampling_probs_reference(lg, 1.0, top_k, top_p)
        want = _tie_closed(ref, lg) & (lg > float("-inf"))
        assert torch.equal(probs > 0, want), (top_k, top_p)
        assert (want.gather(1, tok[:, None])).all()


@needs_triton
@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (20, 1.0), (0, 0.85), (30, 0.9)])
def test_triton_bf16_logits(top_k, top_p, run):
    lg = _logits(b=3, v=260, seed=12).bfloat16()  # bf16 rounding makes ties common
    tok, lp, probs = run(lg, top_k=top_k, top_p=top_p, splits=5, block=16)
    ref = smod.sampling_probs_reference(lg, 0.7, top_k, top_p)
    if top_p >= 1.0:
        assert torch.equal(probs > 0, ref > 0)
    assert torch.equal(probs > 0, _tie_closed(ref, lg))
    renorm = torch.where(probs > 0, torch.softmax(lg.double() / 0.7, -1), 0.0)
    torch.testing.assert_close(probs.double(), renorm / renorm.sum(-1, keepdim=True), atol=1e-6, rtol=1e-5)
    want_lp = torch.log_softmax(lg.double() / 0.7, -1).gather(1, tok[:, None])[:, 0]
    torch.testing.assert_close(lp.double(), want_lp, atol=1e-5, rtol=1e-5)


@needs_triton
def test_draws_follow_target_distribution_across_chunks(kernel_device):
    row = _logits(b=1, v=40, seed=5) / 2.5
    target = smod.sampling_probs_reference(row, 0.9, 0, 0.95)[0]
    assert (target > 0).sum() > 20  # the kept set spans the three chunks
    tok, _ = _on(kernel_device, smod._sample, row.expand(4096, -1).contiguous(), torch.tensor([321]),
                 temperature=0.9, top_p=0.95, splits=3, block=16)  # fmt: skip
    stat, df = _chi2(torch.bincount(tok, minlength=40).double(), target)
    assert stat < _chi2_critical(df), (stat, df)


def test_vocab_passes_are_bounded():
    fp32 = {smod.vocab_passes(k, p, vocab=151936) for k in (1, 50, 151935) for p in (1e-6, 0.5, 0.999)}
    assert fp32 == {17}
    assert {smod.vocab_passes(k, vocab=151936) for k in (1, 50, 151935)} == {9}
    assert {smod.vocab_passes(0, p) for p in (1e-6, 0.5, 0.999)} == {10}
    assert smod.vocab_passes(50, 0.9, dtype=torch.bfloat16) == 9
    assert smod.vocab_passes() == 2 and smod.vocab_passes(50, 0.9, greedy=True) == 1


@needs_triton
@pytest.mark.parametrize(
    "dtype,top_k,top_p,greedy,probs",
    [(torch.float32, 0, 1.0, True, False), (torch.float32, 0, 1.0, False, False), (torch.float32, 1, 1.0, False, False),
     (torch.float32, 99, 1.0, False, True), (torch.float32, 0, 1e-6, False, False),
     (torch.float32, 150, 0.999, False, False), (torch.bfloat16, 0, 1.0, False, False),
     (torch.bfloat16, 200, 0.5, False, False), (torch.bfloat16, 150, 0.999, False, True)],
)  # fmt: skip
def test_vocab_passes_match_instrumented_reads(dtype, top_k, top_p, greedy, probs, kernel_device):
    b, v = 3, 200
    lg = _logits(b=b, v=v, seed=1).to(dtype)
    reads = torch.zeros(b, dtype=torch.int32, device=kernel_device)  # written in place by the kernels
    smod._sample(lg.to(kernel_device), torch.tensor([0], device=kernel_device), top_k=top_k, top_p=top_p,
                 greedy=greedy, return_probs=probs, splits=3, block=16, read_counter=reads)  # fmt: skip
    want = smod.vocab_passes(top_k, top_p, greedy, vocab=v, dtype=dtype, return_probs=probs)
    assert reads.cpu().tolist() == [want * v] * b


@needs_triton
def test_triton_seed_and_offset_drive_the_draw(kernel_device):
    lg = _logits(b=64, v=50, seed=3) / 2.5
    draw = lambda seed, offset=0: _on(kernel_device, smod.triton_sample, lg, torch.tensor([seed]), offset=offset)[0]
    first = draw(1)
    assert torch.equal(first, draw(1))
    assert not torch.equal(first, draw(2))
    assert not torch.equal(first, draw(1, offset=1000))
