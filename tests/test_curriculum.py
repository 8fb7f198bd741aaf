"""Noise curriculum: the paper's published values, shape of the schedule, and the sampler."""

import random

import pytest
import torch

from zerosearch.search.curriculum import NoiseCurriculum, noise_probability


def test_paper_values():
    assert noise_probability(101, 203, 0.0, 0.5, 4.0) == pytest.approx(0.166, abs=1e-3)
    assert noise_probability(202, 203, 0.0, 0.5, 4.0) == pytest.approx(0.496, abs=1e-3)
    assert noise_probability(0, 203, 0.0, 0.5) == 0.0
    # independent re-derivation of the formula at a few points
    for i in (1, 57, 150):
        expected = 0.1 + (4 ** (i / 203) - 1) / 3 * (0.7 - 0.1)
        assert noise_probability(i, 203, 0.1, 0.7) == pytest.approx(expected)


def test_monotone_and_saturates():
    ps = [noise_probability(i, 203, 0.0, 0.5) for i in range(0, 260)]
    assert all(b >= a for a, b in zip(ps, ps[1:]))
    assert all(p == 0.5 for p in ps[203:])
    # decreasing schedules are allowed too and saturate at p_end
    assert noise_probability(500, 100, 0.9, 0.2) == 0.2


def test_linear_base_and_validation():
    assert noise_probability(25, 100, 0.0, 1.0, base=1.0) == pytest.approx(0.25)
    assert noise_probability(50, 100, 0.2, 0.4, base=1.0) == pytest.approx(0.3)
    for bad in (
        dict(step=-1, total_steps=10, p_start=0, p_end=1),
        dict(step=0, total_steps=0, p_start=0, p_end=1),
        dict(step=0, total_steps=10, p_start=-0.1, p_end=1),
        dict(step=0, total_steps=10, p_start=0, p_end=1.5),
        dict(step=0, total_steps=10, p_start=0, p_end=1, base=0.0),
    ):
        with pytest.raises(ValueError):
            noise_probability(**bad)
    with pytest.raises(ValueError):
        NoiseCurriculum(0)


@pytest.mark.parametrize("make_gen", [lambda: random.Random(0), lambda: torch.Generator().manual_seed(0)])
def test_sampled_fraction_matches_probability(make_gen):
    cur = NoiseCurriculum(203, 0.0, 0.5, 4.0)
    n = 20000
    for step in (0, 101, 202, 400):
        p = cur.probability(step)
        frac = sum(cur.sample_noisy(step, n, make_gen())) / n
        assert frac == pytest.approx(p, abs=4 * (p * (1 - p) / n) ** 0.5 + 1e-9)
    assert cur.sample_noisy(5, 0, make_gen()) == []


def test_sampling_is_reproducible():
    cur = NoiseCurriculum(10, 0.5, 0.5)
    a = cur.sample_noisy(3, 50, random.Random(7))
    b = cur.sample_noisy(3, 50, random.Random(7))
    assert a == b and any(a) and not all(a)
