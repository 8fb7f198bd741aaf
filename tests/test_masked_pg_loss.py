"""Masked PPO / GRPO loss: the per-token math against a hand-written loop, and the fused loss against a
float64 materialised reference (values and gradients)."""

import math

import pytest
import torch

from zerosearch.ops.masked_pg_loss import masked_pg_loss, masked_pg_loss_reference
from zerosearch.rl.pg_loss import pg_loss_from_logprobs

try:
    from zerosearch.kernels import token_logprobs as kmod
except ImportError:  # source checkout without the editable install
    from kernels import token_logprobs as kmod


@pytest.fixture(params=["torch", "triton"])
def impl(request, monkeypatch):
    import os

    usable = kmod.HAVE_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")
    if request.param == "triton" and not usable:
        pytest.skip("triton not usable here")
    monkeypatch.setenv("ZEROSEARCH_TRITON", "1" if request.param == "triton" else "0")
    monkeypatch.setenv("ZEROSEARCH_CHUNK_ROWS", "6")
    return request.param


# ---------------------------------------------------------------------------------------------------------
# pg_loss_from_logprobs vs a per-token Python loop
# ---------------------------------------------------------------------------------------------------------


def _loop_kl(lp, rf, kl_type):
    """veRL's kl_penalty (core_algos.py), written out per token: kl/k1, abs, mse/k2, low_var_kl/k3."""
    if kl_type in ("k1", "kl"):
        return lp - rf
    if kl_type == "abs":
        return abs(lp - rf)
    if kl_type in ("k2", "mse"):
        return 0.5 * (lp - rf) ** 2
    r = min(max(rf - lp, -20.0), 20.0)
    return min(max(math.exp(r) - r - 1, -10.0), 10.0)


def _loop_agg(per_seq, agg):
    if agg == "token-mean":
        flat = [x for s in per_seq for x in s]
        return sum(flat) / max(len(flat), 1)
    seqs = [(sum(s) / len(s) if agg == "seq-mean-token-mean" else sum(s)) for s in per_seq if s]
    return sum(seqs) / max(len(seqs), 1)


def _loop_loss(logp, old, adv, mask, ref, ent, *, clip_low, clip_high, dual_clip, kl_coef, kl_type,
               entropy_coef, agg, metrics=False):  # fmt: skip
    """Straightforward scalar implementation of the documented formulas (``metrics``: also the KL and
    entropy aggregated like the loss)."""
    per_seq, kls, ents = [], [], []
    for b in range(len(logp)):
        vals, kl_row, ent_row = [], [], []
        for t in range(len(logp[b])):
            if not mask[b][t]:
                continue
            ratio = math.exp(logp[b][t] - old[b][t])
            a = adv[b][t]
            pg = max(-a * ratio, -a * min(max(ratio, 1 - clip_low), 1 + clip_high))
            if dual_clip is not None and a < 0:
                pg = min(pg, -a * dual_clip)
            loss = pg
            kl = _loop_kl(logp[b][t], ref[b][t], kl_type)
            if kl_coef > 0:
                loss += kl_coef * kl
            loss -= entropy_coef * ent[b][t]
            vals.append(loss)
            kl_row.append(kl)
            ent_row.append(ent[b][t])
        per_seq.append(vals)
        kls.append(kl_row)
        ents.append(ent_row)
    if metrics:
        return _loop_agg(per_seq, agg), _loop_agg(kls, agg), _loop_agg(ents, agg)
    return _loop_agg(per_seq, agg)


def _token_data(b=4, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = logp + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.4  # ratios well beyond the clip
    adv = torch.randn(b, t, generator=g, dtype=torch.float64)
    ref = logp + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.5
    ref[0, 0] = logp[0, 0] - 15  # exercises the k3 clamp
    ent = torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[2] = False  # a sequence with no loss tokens
    mask[0, 0] = True
    return logp, old, adv, ref, ent, mask


KL_NAMES = ["k1", "k2", "k3", "abs", "kl", "mse", "low_var_kl"]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("kl_type", KL_NAMES)
@pytest.mark.parametrize("dual_clip,entropy_coef", [(None, 0.0), (3.0, 0.01)])
def test_pg_math_matches_loop(agg, kl_type, dual_clip, entropy_coef):
    seed = 10 * ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"].index(agg) + KL_NAMES.index(kl_type)
    logp, old, adv, ref, ent, mask = _token_data(seed=seed)
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=dual_clip, kl_coef=0.05, kl_type=kl_type,
              entropy_coef=entropy_coef, agg=agg)  # fmt: skip
    loss, metrics = pg_loss_from_logprobs(logp, old, adv, mask, ref_logprobs=ref, entropy=ent, **kw)
    expected, kl_agg, ent_agg = _loop_loss(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), ref.tolist(),
                                           ent.tolist(), metrics=True, **kw)  # fmt: skip
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # the KL and entropy metrics are aggregated like the loss (veRL's agg_loss on kld and entropy)
    assert metrics["kl"].item() == pytest.approx(kl_agg, rel=1e-10, abs=1e-12)
    assert metrics["entropy"].item() == pytest.approx(ent_agg, rel=1e-10, abs=1e-12)
    n = mask.sum().item()
    assert metrics["n_tokens"].item() == n
    assert metrics["approx_kl"].item() == pytest.approx((old - logp)[mask].sum().item() / n)
    ratio = torch.exp(logp - old)[mask]
    assert metrics["ratio_mean"].item() == pytest.approx(ratio.mean().item())
    assert 0 < metrics["clip_frac"].item() < 1


def test_masked_tokens_get_exactly_zero_grad():
    logp, old, adv, ref, ent, mask = _token_data(seed=3)
    # garbage where masked: must not leak into value or gradient
    old = torch.where(mask, old, torch.full_like(old, float("nan")))
    adv = torch.where(mask, adv, torch.full_like(adv, float("inf")))
    ref = torch.where(mask, ref, torch.full_like(ref, -1e30))
    logp = logp.clone().requires_grad_()
    ent = ent.clone().requires_grad_()
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        logp.grad = ent.grad = None
        loss, metrics = pg_loss_from_logprobs(logp, old, adv, mask, ref_logprobs=ref, entropy=ent,
                                              kl_coef=0.1, entropy_coef=0.01, dual_clip=3.0, agg=agg)  # fmt: skip
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())
        assert (logp.grad[~mask] == 0).all() and (ent.grad[~mask] == 0).all()
        assert logp.grad[mask].abs().sum() > 0


def test_k3_clamped_like_verl():
    """logp=-5, ref=-1: exp(4) - 4 - 1 = 49.6 is clamped to 10, which carries no gradient; inside the clamp the
    value and gradient are the textbook k3 ones. veRL's names are the same functions."""
    logp = torch.tensor([[-5.0, -1.2]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    zeros = torch.zeros(1, 2, dtype=torch.float64)
    for name in ("k3", "low_var_kl"):
        logp.grad = None
        loss, metrics = pg_loss_from_logprobs(logp, logp.detach(), zeros, mask, ref_logprobs=ref, kl_coef=1.0,
                                              kl_type=name, agg="seq-mean-token-sum")  # fmt: skip
        loss.backward()
        d = 0.2  # ref - logp of the second token
        assert loss.item() == pytest.approx(10.0 + math.exp(d) - d - 1)
        assert logp.grad[0, 0].item() == 0.0
        assert logp.grad[0, 1].item() == pytest.approx(1 - math.exp(d))  # d/dlogp (e^(ref-logp) - (ref-logp) - 1)
        assert metrics["kl"].item() == pytest.approx(loss.item())


def test_kl_sign_pulls_towards_reference():
    """DESIGN §2.1: loss = pg + beta * kl. With logp > ref the KL term must raise the loss and its gradient
    must push logp down (towards the reference)."""
    logp, old, adv, _, _, mask = _token_data(seed=4)
    ref = logp.detach() - 0.5
    for kl_type in ("k1", "k2", "k3", "abs"):
        losses = []
        for beta in (0.0, 0.1, 0.2):
            lp = logp.clone().requires_grad_()
            loss, _ = pg_loss_from_logprobs(lp, old, adv, mask, ref_logprobs=ref, kl_coef=beta, kl_type=kl_type)
            losses.append(loss.item())
            if beta == 0.0:
                loss.backward()
                g0 = lp.grad.clone()
            else:
                loss.backward()
                assert ((lp.grad - g0)[mask] > 0).all()  # gradient descent lowers logp
        assert losses[0] < losses[1] < losses[2], kl_type


def test_pg_direction():
    """Positive advantage, ratio inside the clip range: descending the loss raises logp."""
    logp = torch.full((1, 3), -1.0, dtype=torch.float64, requires_grad=True)
    loss, _ = pg_loss_from_logprobs(logp, logp.detach(), torch.ones(1, 3, dtype=torch.float64),
                                    torch.ones(1, 3, dtype=torch.bool))  # fmt: skip
    loss.backward()
    assert loss.item() == pytest.approx(-1.0)
    assert (logp.grad < 0).all()


def test_one_dimensional_is_one_sequence():
    logp, old, adv, ref, ent, mask = _token_data(seed=5)
    kw = dict(ref_logprobs=ref[1], entropy=ent[1], kl_coef=0.1, agg="seq-mean-token-sum")
    a, _ = pg_loss_from_logprobs(logp[1], old[1], adv[1], mask[1], **kw)
    kw.update(ref_logprobs=ref[1:2], entropy=ent[1:2])
    b, _ = pg_loss_from_logprobs(logp[1:2], old[1:2], adv[1:2], mask[1:2], **kw)
    assert a.item() == pytest.approx(b.item())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(agg="mean"), "agg"),
        (dict(kl_type="k4", ref_logprobs=torch.zeros(2, 3)), "kl_type"),
        (dict(kl_coef=0.1), "ref_logprobs"),
        (dict(dual_clip=0.5), "dual_clip"),
        (dict(clip_low=1.5), "clip_low"),
        (dict(entropy_coef=0.1), "entropy"),
    ],
)
def test_pg_validation(kwargs, match):
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=match):
        pg_loss_from_logprobs(z, z, z, torch.ones(2, 3, dtype=torch.bool), **kwargs)


def test_pg_validation_shapes():
    z = torch.zeros(2, 3)
    m = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="advantages"):
        pg_loss_from_logprobs(z, z, torch.zeros(2, 4), m)
    with pytest.raises(ValueError, match="mask"):
        pg_loss_from_logprobs(z, z, z, m.float())


# ---------------------------------------------------------------------------------------------------------
# masked_pg_loss (fused) vs the float64 materialised reference
# ---------------------------------------------------------------------------------------------------------


def _model_data(b, t, h, v, dtype=torch.float32, seed=0, all_masked=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) / h**0.5 * 2).to(dtype).requires_grad_()
    targets = torch.randint(0, v, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[-1] = False
    mask[0, 0] = True
    if all_masked:
        mask[:] = False
    targets = torch.where(mask, targets, torch.full_like(targets, -100))
    with torch.no_grad():
        safe = torch.where(mask, targets, 0)
        lp = torch.log_softmax(hidden.double() @ weight.double().T, -1).gather(-1, safe[..., None])[..., 0]
    old = (lp + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.3).float()
    ref = (lp + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.3).float()
    adv = torch.randn(b, t, generator=g)
    return hidden, weight, targets, old, adv, ref, mask


def _compare(hidden, weight, targets, old, adv, ref, mask, rtol, atol, **kw):
    loss, metrics = masked_pg_loss(hidden, weight, targets, old, adv, mask, ref_logprobs=ref, **kw)
    loss.backward()
    h64 = hidden.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    rloss, rmetrics = masked_pg_loss_reference(
        h64, w64, targets, old.double(), adv.double(), mask, ref_logprobs=ref.double(),
        compute_dtype=torch.float64, **kw,
    )  # fmt: skip
    rloss.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), rloss, rtol=rtol, atol=atol)
    for name in ("pg_loss", "kl", "entropy", "ratio_mean", "approx_kl"):
        torch.testing.assert_close(metrics[name].double(), rmetrics[name], rtol=rtol, atol=atol, msg=name)
    assert (hidden.grad[~mask] == 0).all()
    torch.testing.assert_close(hidden.grad.double(), h64.grad, rtol=rtol * 10, atol=atol)
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=rtol * 10, atol=atol)


AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("kl_type", ["k1", "k2", "k3", "abs", "mse"])
def test_fused_matches_reference(impl, kl_type, agg):
    """Grads made in the forward pass equal float64 autograd through materialised logits, for every KL type
    and aggregation, with and without dual clip, entropy bonus and temperature, over masked rows and chunk
    boundaries (6 rows per chunk)."""
    i, j = KL_NAMES.index(kl_type), AGGS.index(agg)
    b, t, h, v = [(3, 8, 24, 101), (2, 9, 33, 37), (3, 5, 16, 64)][(i + j) % 3]
    kw = dict(agg=agg, kl_coef=[0.1, 0.05, 0.0][j], kl_type=kl_type, entropy_coef=[0.01, 0.0, -0.02][(i + j) % 3],
              temperature=[0.7, 1.0, 1.5][i % 3], dual_clip=3.0 if (i + j) % 2 else None)  # fmt: skip
    data = _model_data(b, t, h, v, seed=b * 100 + v + i)
    _compare(*data, rtol=1e-5, atol=1e-6, **kw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_16bit(impl, dtype):
    data = _model_data(2, 8, 32, 37, dtype=dtype, seed=21)
    # the reference is fed the same 16-bit values; grads of the fused path come back in the input dtype
    tol = dict(rtol=1e-3, atol=2e-3) if dtype == torch.float16 else dict(rtol=4e-3, atol=1e-2)
    _compare(*data, kl_coef=0.1, entropy_coef=0.01, temperature=0.9, dual_clip=2.5, **tol)


def test_fused_backward_scales_by_grad_output(impl):
    """``(c * loss).backward()`` gives c times the grads; the grads live in the forward, so a second backward is
    refused rather than silently wrong; without grad mode nothing is kept and the value is the same."""
    hidden, weight, targets, old, adv, ref, mask = _model_data(2, 7, 16, 37, seed=51)
    kw = dict(ref_logprobs=ref, kl_coef=0.1, entropy_coef=0.01)
    loss, _ = masked_pg_loss(hidden, weight, targets, old, adv, mask, **kw)
    loss.backward()
    g_h, g_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    loss2, _ = masked_pg_loss(hidden, weight, targets, old, adv, mask, **kw)
    (-2.5 * loss2).backward(retain_graph=True)
    torch.testing.assert_close(hidden.grad, -2.5 * g_h)
    torch.testing.assert_close(weight.grad, -2.5 * g_w)
    with pytest.raises(RuntimeError, match="once"):
        loss2.backward()
    with torch.no_grad():
        loss3, _ = masked_pg_loss(hidden, weight, targets, old, adv, mask, **kw)
    assert not loss3.requires_grad and loss3.item() == pytest.approx(loss.item(), rel=1e-6)
    weight.grad = None
    loss4, _ = masked_pg_loss(hidden.detach(), weight, targets, old, adv, mask, **kw)  # a frozen trunk
    loss4.backward()
    torch.testing.assert_close(weight.grad, g_w)


def test_fused_one_sequence(impl):
    hidden, weight, targets, old, adv, ref, mask = _model_data(1, 11, 16, 37, seed=61)
    kw = dict(kl_coef=0.05, entropy_coef=0.01, agg="seq-mean-token-mean")
    flat = (hidden[0].detach().requires_grad_(), weight, targets[0], old[0], adv[0], ref[0], mask[0])
    _compare(*flat, rtol=1e-5, atol=1e-6, **kw)


def test_fused_large_logits(impl):
    hidden, weight, targets, old, adv, ref, mask = _model_data(2, 6, 16, 101, seed=23)
    with torch.no_grad():
        hidden.mul_(100)
    loss, metrics = masked_pg_loss(hidden, weight, targets, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                                   entropy_coef=0.01, dual_clip=3.0)  # fmt: skip
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()
    assert all(torch.isfinite(m) for m in metrics.values())


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_all_masked_batch(impl, agg):
    hidden, weight, targets, old, adv, ref, mask = _model_data(2, 5, 16, 37, seed=31, all_masked=True)
    loss, metrics = masked_pg_loss(hidden, weight, targets, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                                   entropy_coef=0.01, agg=agg)  # fmt: skip
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for grad in (hidden.grad, weight.grad):
        assert grad is not None and (grad == 0).all()
    assert all(torch.isfinite(m) for m in metrics.values())


def test_masked_pg_loss_validation():
    hidden, weight, targets, old, adv, ref, mask = _model_data(2, 5, 16, 37, seed=41)
    with pytest.raises(ValueError, match="hidden"):
        masked_pg_loss(hidden[:, :4], weight, targets, old, adv, mask)
    with pytest.raises(ValueError, match="old_logprobs"):
        masked_pg_loss(hidden, weight, targets, old[:, :4], adv, mask)
    with pytest.raises(ValueError, match="mask"):
        masked_pg_loss(hidden, weight, targets, old, adv, mask.long())
    with pytest.raises(ValueError, match="ref_logprobs"):
        masked_pg_loss(hidden, weight, targets, old, adv, mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="agg"):
        masked_pg_loss(hidden, weight, targets, old, adv, mask, agg="sum")
