"""The learning-rate multipliers: warm-up ramp, flat 'constant', and cosine down to its floor."""

from __future__ import annotations

import math

import pytest

from zerosearch.rl.lr_schedule import lr_factor


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_warmup_ramps_linearly(schedule):
    warm = [lr_factor(s, warmup=4, total=1000, schedule=schedule) for s in range(4)]
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1.0], rel=1e-3)  # cosine has barely moved by step 3 of 1000


def test_constant_stays_at_the_base_rate():
    assert all(lr_factor(s, warmup=3, total=10) == 1.0 for s in range(2, 40))


@pytest.mark.parametrize("min_ratio", [0.0, 0.1, 0.5])
def test_cosine_decays_monotonically_to_its_floor(min_ratio):
    total = 37
    f = [lr_factor(s, warmup=1, total=total, schedule="cosine", min_ratio=min_ratio) for s in range(total + 5)]
    assert f[0] == 1.0
    assert all(a >= b for a, b in zip(f, f[1:]))
    assert f[total] == pytest.approx(min_ratio) and f[-1] == pytest.approx(min_ratio)  # flat after the end
    half = total / 2  # the cosine is halfway between 1 and the floor at half the run (interpolate two steps)
    lo, hi = math.floor(half), math.ceil(half)
    mid = f[lo] + (f[hi] - f[lo]) * (half - lo)
    assert mid == pytest.approx((1 + min_ratio) / 2, abs=0.01)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="constant"):
        lr_factor(0, warmup=1, total=5, schedule="linear")
