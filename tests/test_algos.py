"""Advantage estimators against plain-Python references; masked tokens must be invisible."""

import math
import random

import pytest
import torch

from zerosearch.algos import (
    gae,
    grpo_advantages,
    masked_mean,
    masked_whiten,
    reinforce_pp_advantages,
    token_level_rewards,
    value_loss,
)


def _grpo_reference(rewards, groups, eps=1e-6, singleton="zero", norm_by_std=True):
    """veRL's compute_grpo_outcome_advantage per row (singleton: mean 0, std 1), except that "zero" gives a
    singleton 0 and a constant group is exactly 0."""
    out = []
    for r, g in zip(rewards, groups):
        members = [x for x, h in zip(rewards, groups) if h == g]
        if len(members) < 2:
            out.append(0.0 if singleton == "zero" else (r / (1 + eps) if norm_by_std else r))
            continue
        if min(members) == max(members):
            out.append(0.0)
            continue
        mean = sum(members) / len(members)
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - 1))
        out.append((r - mean) / (std + eps) if norm_by_std else r - mean)
    return out


def test_grpo_matches_reference():
    rng = random.Random(0)
    groups = ["q1"] * 5 + [("nq", 7)] * 3 + ["single"] + ["q1", ("nq", 7)] + ["tie"] * 4
    rng.shuffle(groups)
    rewards = [rng.choice([0.0, 1.0, 0.5, rng.random()]) for _ in groups]
    got = grpo_advantages(torch.tensor(rewards, dtype=torch.float64), groups)
    torch.testing.assert_close(got, torch.tensor(_grpo_reference(rewards, groups), dtype=torch.float64))


@pytest.mark.parametrize("singleton", ["zero", "reward"])
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_options_match_reference(singleton, norm_by_std):
    rng = random.Random(1 + norm_by_std)
    groups = ["a"] * 4 + ["b"] * 3 + ["solo", "other solo"] + ["tie"] * 3
    rewards = [rng.random() * 2 - 0.5 for _ in groups]
    rewards[-3:] = [0.7] * 3
    got = grpo_advantages(torch.tensor(rewards, dtype=torch.float64), groups, singleton=singleton,
                          norm_by_std=norm_by_std)  # fmt: skip
    want = _grpo_reference(rewards, groups, singleton=singleton, norm_by_std=norm_by_std)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))
    assert (got[7:9] != 0).all() == (singleton == "reward")
    assert (got[-3:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_grpo_promotes_integer_rewards(dtype):
    """Integer / bool rewards (exact-match scores) give the same advantages as the same values in float."""
    groups = [0, 0, 0, 1, 1, 1, 1]
    ints = torch.tensor([1, 0, 0, 1, 1, 0, 1]).to(dtype)
    got = grpo_advantages(ints, groups)
    assert got.dtype == torch.get_default_dtype()
    torch.testing.assert_close(got, grpo_advantages(ints.to(torch.float32), groups))
    assert (got != 0).all()


def test_grpo_singleton_and_zero_variance_give_zero():
    got = grpo_advantages(torch.tensor([1.0, 1.0, 1.0, 0.3]), torch.tensor([0, 0, 0, 5]))
    assert torch.equal(got, torch.zeros(4))
    got = grpo_advantages(torch.tensor([1.0, 0.0]), [3, 3])
    assert not torch.isnan(got).any()
    assert got[0] > 0 > got[1]
    with pytest.raises(ValueError):
        grpo_advantages(torch.zeros(3), [1, 2])


def _gae_compact_reference(rewards, values, gamma, lam):
    """Textbook GAE on a plain list (episode ends after the last element)."""
    n = len(rewards)
    adv = [0.0] * n
    last = 0.0
    for t in reversed(range(n)):
        nv = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * nv - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv


def test_gae_matches_compacted_loop():
    g = torch.Generator().manual_seed(1)
    B, T, gamma, lam = 4, 12, 0.9, 0.8
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) < 0.6
    mask[3] = False  # a row with no policy token
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b in range(B):
        idx = mask[b].nonzero().flatten().tolist()
        ref = _gae_compact_reference(rewards[b, idx].tolist(), values[b, idx].tolist(), gamma, lam)
        expected = torch.zeros(T, dtype=torch.float64)
        if idx:
            expected[idx] = torch.tensor(ref, dtype=torch.float64)
        torch.testing.assert_close(adv[b], expected)
        torch.testing.assert_close(ret[b], torch.where(mask[b], expected + values[b], torch.zeros(T).double()))


def test_gae_information_span_is_transparent():
    gamma, lam = 0.95, 0.7
    r = torch.tensor([[0.1, -0.2, 0.0, 0.3, 1.0]])
    v = torch.tensor([[0.5, 0.4, -0.1, 0.2, 0.6]])
    m = torch.ones(1, 5, dtype=torch.bool)
    adv_plain, _ = gae(r, v, m, gamma, lam)
    # Insert 3 "information" tokens (with arbitrary rewards/values) after token 2 and 1 at the end.
    info_r, info_v = torch.tensor([[9.0, -9.0, 4.0]]), torch.tensor([[7.0, 8.0, -3.0]])
    r2 = torch.cat([r[:, :2], info_r, r[:, 2:], torch.tensor([[5.0]])], dim=1)
    v2 = torch.cat([v[:, :2], info_v, v[:, 2:], torch.tensor([[5.0]])], dim=1)
    m2 = torch.cat([m[:, :2], torch.zeros(1, 3, dtype=torch.bool), m[:, 2:], torch.zeros(1, 1, dtype=torch.bool)], 1)
    adv2, ret2 = gae(r2, v2, m2, gamma, lam)
    torch.testing.assert_close(adv2[m2], adv_plain.flatten())
    assert torch.equal(adv2[~m2], torch.zeros(4))
    assert torch.equal(ret2[~m2], torch.zeros(4))


def test_gae_gamma_lam_one_is_reward_to_go_minus_value():
    r = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    v = torch.tensor([[0.2, 0.3, 0.4, 0.5]])
    m = torch.tensor([[True, False, True, True]])
    adv, ret = gae(r, v, m)
    torch.testing.assert_close(adv, torch.tensor([[0.8, 0.0, 0.6, 0.5]]))
    torch.testing.assert_close(ret, torch.tensor([[1.0, 0.0, 1.0, 1.0]]))


def test_masked_mean_and_whiten_ignore_unmasked():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 7, generator=g) < 0.5
    mask[0, 0] = True
    y = x.clone()
    y[~mask] = torch.tensor(float("nan"))  # anything there must not matter, even NaN
    assert masked_mean(x, mask) == pytest.approx(x[mask].mean().item())
    torch.testing.assert_close(masked_mean(x, mask), masked_mean(y, mask))
    w = masked_whiten(x, mask)
    torch.testing.assert_close(w, masked_whiten(y, mask))
    sel = x[mask]
    torch.testing.assert_close(w[mask], (sel - sel.mean()) / torch.sqrt(sel.var() + 1e-8))
    assert torch.equal(w[~mask], torch.zeros_like(w[~mask]))
    ws = masked_whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(ws[mask].mean(), sel.mean())
    rows = masked_mean(x, mask, dim=1)
    for b in range(3):
        expected = x[b][mask[b]].mean() if mask[b].any() else torch.tensor(0.0, dtype=torch.float64)
        torch.testing.assert_close(rows[b], expected)


def test_reinforce_pp_reference_and_mask_invariance():
    gamma = 0.9
    g = torch.Generator().manual_seed(3)
    r = torch.randn(3, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0, 1, 1], [0, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    adv, ret = reinforce_pp_advantages(r, mask, gamma)
    all_returns = []
    for b in range(3):
        idx = mask[b].nonzero().flatten().tolist()
        running, ref = 0.0, {}
        for t in reversed(idx):
            running = r[b, t].item() + gamma * running
            ref[t] = running
        for t in range(6):
            assert ret[b, t].item() == pytest.approx(ref.get(t, 0.0))
        all_returns += [ref[t] for t in idx]
    ref_t = torch.tensor(all_returns, dtype=torch.float64)
    torch.testing.assert_close(adv[mask], (ref_t - ref_t.mean()) / torch.sqrt(ref_t.var() + 1e-8))
    r2 = r.clone()
    r2[~mask] = 100.0
    adv2, _ = reinforce_pp_advantages(r2, mask, gamma)
    torch.testing.assert_close(adv, adv2)


def test_token_level_rewards():
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    scores = torch.tensor([1.0, 2.0, 3.0])
    kl = torch.full((3, 5), 2.0)
    out = token_level_rewards(scores, mask, kl, kl_coef=0.1)
    expected = torch.tensor([[-0.2, -0.2, 0.0, 0.8, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [2.8, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    assert torch.equal(token_level_rewards(scores, mask)[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))


def test_value_loss_clipping():
    mask = torch.tensor([[True, True, False]])
    old = torch.tensor([[0.0, 0.0, 0.0]])
    ret = torch.tensor([[1.0, 1.0, 50.0]])
    # token 0: v=2 (clipped 0.5): max((1)^2,(0.5)^2)=1 ; token 1: v=0.9 (clipped 0.5): max(.01,.25)=.25
    values = torch.tensor([[2.0, 0.9, -30.0]])
    loss = value_loss(values, old, ret, mask, clip=0.5)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.25) / 2)
    values.requires_grad_(True)
    value_loss(values, old, ret, mask).backward()
    assert values.grad[0, 2] == 0
