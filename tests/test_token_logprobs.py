"""Fused token log-probs (Triton kernel and chunked torch path) against a float64 materialised reference."""

import pytest
import torch

from zerosearch.ops.token_logprobs import _pick_backend, token_logprobs

try:
    from zerosearch.kernels import token_logprobs as kmod
except ImportError:  # source checkout without the editable install
    from kernels import token_logprobs as kmod

token_logprobs_reference = kmod.token_logprobs_reference


def _triton_usable() -> bool:
    import os

    return kmod.HAVE_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")


@pytest.fixture(params=["torch", "triton"])
def impl(request, monkeypatch):
    """Select the implementation through the public env switch; small chunks so the backward loops."""
    if request.param == "triton" and not _triton_usable():
        pytest.skip("triton not usable here")
    monkeypatch.setenv("ZEROSEARCH_TRITON", "1" if request.param == "triton" else "0")
    monkeypatch.setenv("ZEROSEARCH_CHUNK_ROWS", "5")
    return request.param


def _inputs(shape, h, v, dtype=torch.float32, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(*shape, h, generator=g) * scale).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) / h**0.5 * 2).to(dtype).requires_grad_()
    targets = torch.randint(0, v, shape, generator=g)
    return hidden, weight, targets


def _upstream(shape, seed=1):
    """Deterministic random upstream gradients (fresh inputs per test, independent of test order)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def _reference(hidden, weight, targets, temperature, mask=None):
    """float64 logp/entropy and their grads w.r.t. (hidden, weight) for upstream grads (g_lp, g_ent)."""
    h64 = hidden.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    safe_t = targets if mask is None else torch.where(mask, targets, 0)
    lp, ent = token_logprobs_reference(h64, w64, safe_t, temperature, with_entropy=True,
                                       compute_dtype=torch.float64)  # fmt: skip
    if mask is not None:
        lp, ent = torch.where(mask, lp, 0.0), torch.where(mask, ent, 0.0)
    return lp, ent, h64, w64


def _check(actual, expected, rtol, atol, what):
    assert torch.isfinite(actual).all(), what
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol, msg=what)


CASES = [
    # (token shape, H, V, temperature)
    ((24,), 48, 101, 0.7),
    ((2, 9), 33, 37, 1.3),
    ((16,), 16, 16, 1.0),
    ((3,), 17, 64, 2.0),
]


@pytest.mark.parametrize("shape,h,v,temperature", CASES)
def test_values_and_grads_with_entropy(impl, shape, h, v, temperature):
    hidden, weight, targets = _inputs(shape, h, v, seed=len(shape) * 100 + v)
    lp, ent = token_logprobs(hidden, weight, targets, temperature=temperature, with_entropy=True)
    assert lp.dtype == torch.float32 and lp.shape == targets.shape and ent.shape == targets.shape
    g_lp, g_ent = _upstream(shape)
    (lp * g_lp + ent * g_ent).sum().backward()

    rlp, rent, h64, w64 = _reference(hidden, weight, targets, temperature)
    (rlp * g_lp.double() + rent * g_ent.double()).sum().backward()
    _check(lp, rlp, 1e-5, 1e-5, "logp")
    _check(ent, rent, 1e-5, 1e-5, "entropy")
    _check(hidden.grad, h64.grad, 1e-4, 1e-5, "grad hidden")
    _check(weight.grad, w64.grad, 1e-4, 1e-5, "grad weight")


def test_logp_only(impl):
    hidden, weight, targets = _inputs((2, 7), 20, 37, seed=3)
    lp = token_logprobs(hidden, weight, targets, temperature=0.9)
    assert isinstance(lp, torch.Tensor)
    g, _ = _upstream((2, 7))
    (lp * g).sum().backward()
    rlp, _, h64, w64 = _reference(hidden, weight, targets, 0.9)
    (rlp * g.double()).sum().backward()
    _check(lp, rlp, 1e-5, 1e-5, "logp")
    _check(hidden.grad, h64.grad, 1e-4, 1e-5, "grad hidden")
    _check(weight.grad, w64.grad, 1e-4, 1e-5, "grad weight")


def test_masked_rows_are_skipped(impl):
    hidden, weight, targets = _inputs((3, 6), 24, 101, seed=5)
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[1] = False  # a fully masked sequence
    mask[0, 0] = True
    targets = torch.where(mask, targets, torch.full_like(targets, -100))  # padding ids are never read
    lp, ent = token_logprobs(hidden, weight, targets, temperature=0.8, with_entropy=True, mask=mask)
    assert (lp[~mask] == 0).all() and (ent[~mask] == 0).all()
    g_lp, g_ent = _upstream((3, 6))
    (lp * g_lp + ent * g_ent).sum().backward()
    assert (hidden.grad[~mask] == 0).all()

    rlp, rent, h64, w64 = _reference(hidden, weight, targets, 0.8, mask=mask)
    (rlp * g_lp.double() + rent * g_ent.double()).sum().backward()
    _check(lp, rlp, 1e-5, 1e-5, "logp")
    _check(ent, rent, 1e-5, 1e-5, "entropy")
    _check(hidden.grad, h64.grad, 1e-4, 1e-5, "grad hidden")
    _check(weight.grad, w64.grad, 1e-4, 1e-5, "grad weight")


def test_all_masked(impl):
    hidden, weight, targets = _inputs((2, 4), 16, 37, seed=7)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    lp, ent = token_logprobs(hidden, weight, targets, with_entropy=True, mask=mask)
    assert (lp == 0).all() and (ent == 0).all() and lp.requires_grad
    (lp.sum() + ent.sum()).backward()
    for grad in (hidden.grad, weight.grad):
        assert grad is None or (grad == 0).all()


def test_large_logits(impl):
    hidden, weight, targets = _inputs((12,), 32, 101, scale=100.0, seed=9)
    lp, ent = token_logprobs(hidden, weight, targets, temperature=0.5, with_entropy=True)
    g_lp, g_ent = torch.randn(2, 12, generator=torch.Generator().manual_seed(2))
    (lp * g_lp + ent * g_ent).sum().backward()
    rlp, rent, h64, w64 = _reference(hidden, weight, targets, 0.5)
    (rlp * g_lp.double() + rent * g_ent.double()).sum().backward()
    assert rlp.abs().max() > 100  # the test really exercises large logits
    scale = rlp.abs().max().item()
    _check(lp, rlp, 1e-5, 1e-6 * scale, "logp")
    _check(ent, rent, 1e-4, 1e-4, "entropy")
    # The backward recomputes the logits with a torch matmul while lse comes from the forward (kernel or
    # torch): with |z| ~ 3e3 their fp32 rounding differs by ~eps32 * |z| ~ 4e-4, relative to the largest grad.
    _check(hidden.grad, h64.grad, 1e-3, 2e-3 * h64.grad.abs().max().item(), "grad hidden")
    _check(weight.grad, w64.grad, 1e-3, 2e-3 * w64.grad.abs().max().item(), "grad weight")


def test_fp16_inputs(impl):
    hidden, weight, targets = _inputs((2, 8), 40, 37, dtype=torch.float16, seed=11)
    lp, ent = token_logprobs(hidden, weight, targets, temperature=1.1, with_entropy=True)
    assert lp.dtype == torch.float32
    g_lp, g_ent = _upstream((2, 8))
    (lp * g_lp + ent * g_ent).sum().backward()
    assert hidden.grad.dtype == torch.float16 and weight.grad.dtype == torch.float16
    # the reference sees the same fp16 values; only the accumulation / output rounding differ
    rlp, rent, h64, w64 = _reference(hidden, weight, targets, 1.1)
    (rlp * g_lp.double() + rent * g_ent.double()).sum().backward()
    _check(lp, rlp, 1e-4, 1e-4, "logp")
    _check(ent, rent, 1e-4, 1e-4, "entropy")
    _check(hidden.grad, h64.grad, 1e-2, 2e-3, "grad hidden")
    _check(weight.grad, w64.grad, 1e-2, 2e-3, "grad weight")


def test_triton_row_kernels_match_float64():
    """The row kernels on one chunk of logits, directly (no autograd): the stats and dlogits (with and without
    the entropy term) against float64, and the torch row pass against the same numbers."""
    if not _triton_usable():
        pytest.skip("triton not usable here")
    from zerosearch.ops.token_logprobs import _torch_dlogits_from_stats_, _torch_row_stats_

    g = torch.Generator().manual_seed(13)
    c, v, inv_temp = 7, 5000, 1 / 0.7  # V over one 4096 tile: the online max moves between tiles
    x = torch.randn(c, v, generator=g) * 4
    x[0, 4500] = 40.0  # the row maximum in the second tile
    targets = torch.randint(0, v, (c,), generator=g)
    g_lp, g_ent = torch.randn(c, generator=g), torch.randn(c, generator=g)
    z64 = (x.double() * inv_temp).requires_grad_()
    logp_all = torch.log_softmax(z64, 1)
    want_lp = logp_all.gather(1, targets[:, None]).squeeze(1)
    want_ent = -(logp_all.exp() * logp_all).sum(1)
    want_lse = torch.logsumexp(z64, 1)
    for name, got in (("triton", kmod.triton_row_stats(x, targets, inv_temp)),
                      ("torch", _torch_row_stats_(x.clone(), targets, inv_temp)[:3])):  # fmt: skip
        for a, b in zip(got, (want_lp, want_lse, want_ent)):
            torch.testing.assert_close(a.double(), b.detach(), rtol=1e-5, atol=1e-5, msg=name)
    lp, lse, ent = kmod.triton_row_stats(x, targets, inv_temp)
    for ge in (g_ent, None):
        (dz64,) = torch.autograd.grad((want_lp * g_lp + (0 if ge is None else want_ent * ge)).sum(), z64,
                                      retain_graph=True)  # fmt: skip
        want = dz64 * inv_temp  # d/dx of the raw logits
        got = kmod.triton_dlogits_(x.clone(), targets, lse, ent, g_lp, ge, inv_temp)
        tol = dict(rtol=1e-4, atol=1e-5 * want.abs().max().item())  # fp32 rounding of the largest entries
        torch.testing.assert_close(got.double(), want, **tol)
        xt = x.clone()
        _, tlse, tent, p = _torch_row_stats_(xt, targets, inv_temp)
        got = _torch_dlogits_from_stats_(xt, p, targets, tent, g_lp, ge, inv_temp)
        torch.testing.assert_close(got.double(), want, **tol)


def test_dispatch(monkeypatch):
    monkeypatch.setenv("ZEROSEARCH_TRITON", "0")
    assert _pick_backend(torch.device("cpu")) == "torch"
    monkeypatch.delenv("ZEROSEARCH_TRITON")
    assert _pick_backend(torch.device("cpu")) == "torch"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(weight=torch.randn(11, 7)), "weight"),
        (dict(weight=torch.randn(11, 8, dtype=torch.float64)), "dtype"),
        (dict(targets=torch.zeros(4, 2, dtype=torch.long)), "targets shape"),
        (dict(targets=torch.zeros(4, 3)), "integer"),
        (dict(targets=torch.full((4, 3), 11)), r"\[0, 11\)"),
        (dict(mask=torch.ones(4, 3)), "mask"),
        (dict(mask=torch.ones(4, 2, dtype=torch.bool)), "mask shape"),
        (dict(temperature=0.0), "temperature"),
    ],
)
def test_validation(kwargs, match):
    args = dict(hidden=torch.randn(4, 3, 8), weight=torch.randn(11, 8), targets=torch.zeros(4, 3, dtype=torch.long))
    args.update(kwargs)
    rest = {k: args.pop(k) for k in ("mask", "temperature") if k in args}
    with pytest.raises(ValueError, match=match):
        token_logprobs(args["hidden"], args["weight"], args["targets"], **rest)
