"""Fused on-device sampling (temperature, top-k, top-p, greedy) in Triton, plus the torch references.

Every row is split over ``S`` programs (chunks of the vocabulary; ``S`` grows as the batch shrinks, so a
64-row batch still fills a 132-SM GPU), and the vocabulary is streamed a small, fixed number of times; nothing
is sorted. Per-chunk partial results go to a small workspace, and every program of the next launch combines a
row's partials itself (the same arithmetic in every program: no atomics, no extra combine launches,
deterministic results). The launch sequence depends only on the shapes, the dtype and the settings, and the
seed is read from a one-element device tensor, so a captured CUDA graph can replay it and advance the seed.

Passes over the vocabulary (`vocab_passes` computes them; a test counts the logits each launch reads):

1. stats: per-chunk max and sum-exp of ``z = logits / T`` (→ ``lse``) and the first index of the max.
   Greedy stops here: 1 pass.
2. top-k / top-p thresholds by radix select over a 32-bit key that orders like the float logit (IEEE bits,
   the low 31 flipped for negatives). Each pass histograms one 4-bit digit of the keys still in the candidate
   range into 16 bins, as counts (top-k) or probability masses (top-p); the next launch picks the digit that
   holds the k-th largest key, or the largest key ``t`` with ``mass(key >= t) >= top_p * mass(top-k set)``,
   and narrows the range to it. fp32 keys need 8 digits; bf16 logits leave the low 16 bits zero (4 digits,
   fp16: 5). The first top-k digit is counted in the stats pass, so top-k adds 7 passes (bf16: 3) and top-p
   8 (bf16: 4) whatever k and p are, where bisection over the bit pattern needed 31 each. Why 4-bit digits:
   a histogram costs a compare, a select and an add per bin and token (two counts share an int32 word), so
   256 bins would halve the passes at ~16x the arithmetic, while 16 keep a pass near the cost of reading the
   logits. Tiles with no candidate left skip that work, so once a few digits are fixed a pass is a plain read
   on real logits. The sets are exact: top-k keeps every token whose logit is >= the k-th largest logit, top-p
   every token whose key is >= the threshold key (tokens tied at either boundary are all kept): the
   sort-based sets of `sampling_probs_reference` up to those ties and fp32 rounding of the masses. Keys come
   from the logits themselves, so the temperature cannot merge distinct logits into ties.
3. draw: Gumbel-max ``argmax(z_i - log(-log u_i))`` over the kept tokens, per chunk (the finishing launch
   takes the best chunk), with Philox uniforms ``tl.rand4x(seed, row * ceil(V/4) + i // 4 + offset)``, four
   uniforms per Philox call.

So for fp32 logits: greedy 1, temperature 2, top-k 9, top-p 10, top-k + top-p 17 passes (bf16: 1, 2, 5, 6, 9);
``return_probs`` adds one. The returned log-prob is that of the sampled token under the temperature-scaled
distribution before the top-k/top-p cut (what `HFSampler` and the trainer's `token_logprobs` compute).
"""

from __future__ import annotations

import functools

import torch

from ._triton import HAVE_TRITON, interpreting, next_pow2, tl, triton

__all__ = [
    "HAVE_TRITON",
    "sample_reference",
    "sampling_probs_reference",
    "triton_sample",
    "vocab_passes",
]


def sampling_probs_reference(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Probabilities of the sampling distribution ``[B, V]`` (float64), computed by sorting.

    top-k keeps the k largest logits; top-p then keeps the smallest prefix of the descending order whose
    mass reaches ``top_p`` (a token is kept iff the mass strictly before it is ``< top_p``).
    """
    z = logits.double() / temperature
    v = z.shape[-1]
    if 0 < top_k < v:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sz, idx = torch.sort(z, dim=-1, descending=True)
        sp = torch.softmax(sz, dim=-1)
        before = torch.cumsum(sp, dim=-1) - sp
        drop_sorted = before >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        z = z.masked_fill(drop, float("-inf"))
    return torch.softmax(z, dim=-1)


def sample_reference(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch sampling used by the engine off-GPU: ``(tokens [B] int64, logprobs [B] fp32)``.

    No host sync: one uniform per row is mapped through the float64 CDF (``searchsorted``, right side, so a
    zero-probability token can never be picked). Unlike `torch.multinomial` this is capturable in a CUDA
    graph, and on CPU it is far cheaper than a vocab-sized exponential or Gumbel draw.
    """
    z = logits.float()
    if greedy:
        tok = torch.argmax(z, dim=-1)
        lp = torch.log_softmax(z, dim=-1)
    else:
        lp = torch.log_softmax(z / temperature, dim=-1)
        if top_k <= 0 and top_p >= 1.0:
            probs = lp.exp()
        else:
            probs = _masked_probs_fast(z / temperature, top_k, top_p)
        cdf = torch.cumsum(probs.double(), dim=-1)
        u = torch.rand(z.shape[0], 1, dtype=torch.float64, device=z.device, generator=generator) * cdf[:, -1:]
        tok = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(z.shape[-1] - 1)
    return tok, lp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)


def _masked_probs_fast(z: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """fp32 version of `sampling_probs_reference` for the engine (same rule, no float64)."""
    v = z.shape[-1]
    if 0 < top_k < v:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sz, idx = torch.sort(z, dim=-1, descending=True)
        sp = torch.softmax(sz, dim=-1)
        drop_sorted = (torch.cumsum(sp, dim=-1) - sp) >= top_p
        drop_sorted[:, 0] = False
        z = z.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted), float("-inf"))
    return torch.softmax(z, dim=-1)


_DIGIT_BITS = 4
_BINS = 1 << _DIGIT_BITS
# what the launch after a radix pass has to do with that pass's histogram (the `prev` argument)
_PREV_NONE, _PREV_K, _PREV_K_THEN_P, _PREV_P, _PREV_P_FIRST = 0, 1, 2, 3, 4


def _key_low_bits(dtype: torch.dtype) -> int:
    """Low bits of the fp32 pattern that are zero for every value of ``dtype``: no radix digit is spent there."""
    return {torch.bfloat16: 16, torch.float16: 13}.get(dtype, 0)


def _radix_steps(
    top_k: int, top_p: float, greedy: bool, vocab: int | None, dtype: torch.dtype
) -> list[tuple[bool, int]]:
    """``(masses?, shift)`` of every radix pass: the top-k digits (counts) first, then the top-p digits (masses)."""
    if greedy:
        return []
    shifts = list(range(32 - _DIGIT_BITS, _key_low_bits(dtype) - _DIGIT_BITS, -_DIGIT_BITS))
    steps = []
    if top_k > 0 and (vocab is None or top_k < vocab):
        steps += [(False, s) for s in shifts]
    if top_p < 1.0:
        steps += [(True, s) for s in shifts]
    return steps


def _prev_code(steps: list[tuple[bool, int]], j: int) -> int:
    """How the launch that follows radix pass ``j - 1`` (pass ``j``, or the draw when ``j == len(steps)``)
    must combine that pass's histogram."""
    if j == 0:
        return _PREV_NONE
    if not steps[j - 1][0]:
        return _PREV_K_THEN_P if j < len(steps) and steps[j][0] else _PREV_K
    return _PREV_P_FIRST if j == 1 or not steps[j - 2][0] else _PREV_P


def vocab_passes(
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    *,
    vocab: int | None = None,
    dtype: torch.dtype = torch.float32,
    return_probs: bool = False,
) -> int:
    """How many times `triton_sample` streams the logits of a row (see the module docstring).

    stats (+ the first top-k digit) → the other radix digits → the draw (→ the probabilities).
    """
    if greedy:
        return 1
    steps = _radix_steps(top_k, top_p, greedy, vocab, dtype)
    fused = bool(steps) and not steps[0][0]
    return 1 + len(steps) - int(fused) + 1 + int(return_probs)


if HAVE_TRITON:
    from triton.language.extra import libdevice

    _I32_MIN = tl.constexpr(-2147483648)
    _I32_MAX = tl.constexpr(2147483647)
    # per-step arguments vary between launches of one call: no value specialisation (one compiled variant)
    _STEP_ARGS = ["par_in", "prev", "prev_shift", "shift"]

    @triton.jit
    def _tile(logits_ptr, cnt_ptr, rows, rows64, row_ok, stride_l, cols, ok, COUNT: tl.constexpr):
        """A ``[ROWS, BLOCK_V]`` tile of logits as fp32 (-inf where masked) and its order keys: int32 that compare
        like the floats (IEEE bits with the low 31 flipped for negatives; -0.0 gets the key of +0.0, they tie).
        COUNT (test instrumentation): add the number of logits read to ``cnt[row]``."""
        x = tl.load(logits_ptr + rows64[:, None] * stride_l + cols[None, :], mask=ok, other=-float("inf"))
        x = x.to(tl.float32)
        bits = x.to(tl.int32, bitcast=True)
        if COUNT:
            tl.atomic_add(cnt_ptr + rows, tl.sum(ok.to(tl.int32), axis=1), mask=row_ok)
        return x, tl.where(x == 0.0, 0, bits ^ ((bits >> 31) & 0x7FFFFFFF))

    @triton.jit
    def _log2(x, FAST: tl.constexpr):
        """log2; FAST: the hardware approximation (``lg2.approx``, ~2^-22 relative), not the libdevice polynomial.
        The interpreter has no libdevice, so it takes the exact one."""
        if FAST:
            return libdevice.fast_log2f(x)
        else:
            return tl.log2(x)

    @triton.jit
    def _row_max_lse(stat_ptr, rows, row_ok, S, SP: tl.constexpr):
        """Combine the per-chunk (max, sum-exp) partials of each row into (max, logsumexp)."""
        sp = tl.arange(0, SP)
        ok = row_ok[:, None] & (sp < S)[None, :]
        base = (rows[:, None] * S + sp[None, :]) * 2
        ms = tl.load(stat_ptr + base, mask=ok, other=-float("inf"))
        ss = tl.load(stat_ptr + base + 1, mask=ok, other=0.0)
        m = tl.where(row_ok, tl.max(ms, axis=1), 0.0)  # rows past B: 0, so no inf - inf downstream
        m_ref = tl.where(m > -float("inf"), m, 0.0)
        s = tl.where(row_ok, tl.sum(ss * tl.exp(ms - m_ref[:, None]), axis=1), 1.0)
        return m, m_ref + tl.log(s)

    @triton.jit
    def _select_digit(h, lo, above, target, shift, R: tl.constexpr):
        """Narrow the range ``[lo, lo + R << shift)`` to the digit bin that holds the threshold.

        ``h[:, d]``: count / mass of the candidates whose digit is ``d``; ``above``: count / mass of the keys
        above the range. The threshold bin is the highest ``d`` with ``above + h[d:].sum() >= target``. If fp32
        rounding of a recomputed mass leaves none, the lowest non-empty bin is taken (all the range is kept).
        """
        bins = tl.arange(0, R)
        upper = bins[None, :] >= bins[:, None]  # [d, j]: bin j is at or above digit d
        cum = tl.sum(tl.where(upper[None, :, :], h[:, None, :], 0.0), axis=2)
        ok = (above[:, None] + cum) >= target[:, None]
        d = tl.max(tl.where(ok, bins[None, :], -1), axis=1)
        lowest = tl.min(tl.where(h > 0, bins[None, :], R - 1), axis=1)
        d = tl.where(d >= 0, d, lowest)
        above = above + tl.sum(tl.where(bins[None, :] > d[:, None], h, 0.0), axis=1)
        lo = lo + (d << shift)
        return lo, lo + ((1 << shift) - 1), above

    @triton.jit
    def _advance(hist_ptr, st_i_ptr, st_f_ptr, rows, row_ok, B, S, par_in, prev, prev_shift, top_p,
                 ROWS: tl.constexpr, R: tl.constexpr, SP: tl.constexpr):  # fmt: skip
        """Radix state after the previous pass: key range ``[lo, hi]`` of the next pass, the top-k threshold
        ``tk`` (int32 min when off), and the count / mass ``above`` the range with the ``target`` it must reach.
        """
        lo = tl.full((ROWS,), _I32_MIN, tl.int32)
        hi = tl.full((ROWS,), _I32_MAX, tl.int32)
        tk = tl.full((ROWS,), _I32_MIN, tl.int32)
        above = tl.zeros((ROWS,), tl.float32)
        target = tl.zeros((ROWS,), tl.float32)
        if prev != 0:
            si = st_i_ptr + (par_in * B + rows) * 2
            sf = st_f_ptr + (par_in * B + rows) * 2
            lo = tl.load(si, mask=row_ok, other=0)
            tk = tl.load(si + 1, mask=row_ok, other=0)
            above = tl.load(sf, mask=row_ok, other=0.0)
            target = tl.load(sf + 1, mask=row_ok, other=0.0)
            sp = tl.arange(0, SP)
            bins = tl.arange(0, R)
            offs = ((par_in * B + rows[:, None, None]) * S + sp[None, :, None]) * R + bins[None, None, :]
            ok = row_ok[:, None, None] & (sp < S)[None, :, None]
            h = tl.sum(tl.load(hist_ptr + offs, mask=ok, other=0.0), axis=1)
            if prev == 4:  # _PREV_P_FIRST: the first top-p histogram also gives the mass of the top-k set
                target = top_p * tl.sum(h, axis=1)
            lo, hi, above = _select_digit(h, lo, above, target, prev_shift, R)
            if prev == 2:  # _PREV_K_THEN_P: top-k threshold found; top-p starts over the key range above it
                tk = lo
                lo = tl.full((ROWS,), _I32_MIN, tl.int32)
                hi = tl.full((ROWS,), _I32_MAX, tl.int32)
                above = tl.zeros((ROWS,), tl.float32)
                target = tl.zeros((ROWS,), tl.float32)
        return lo, hi, tk, above, target

    @triton.jit
    def _store_state(st_i_ptr, st_f_ptr, slot, B, rows, mask, lo, tk, above, target):
        # callers pass mask = row_ok & (rows * 0 + split == 0): chunk 0 writes the row's state (the interpreter
        # rejects a mask built as bool tensor & bool scalar)
        tl.store(st_i_ptr + (slot * B + rows) * 2, lo, mask=mask)
        tl.store(st_i_ptr + (slot * B + rows) * 2 + 1, tk, mask=mask)
        tl.store(st_f_ptr + (slot * B + rows) * 2, above, mask=mask)
        tl.store(st_f_ptr + (slot * B + rows) * 2 + 1, target, mask=mask)

    @triton.jit
    def _hist_zeros(MASS: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, R: tl.constexpr):
        """Per-lane histograms: ``[R, ROWS * BLOCK_V]`` fp32 masses, or ``[R // 2, ROWS * BLOCK_V]`` int32 words
        holding two 16-bit counts each. Bins on the first axis and the tile flattened: Triton then gives every
        thread all bins of its own columns, so nothing moves between threads inside the loop."""
        if MASS:
            return tl.zeros((R, ROWS * BLOCK_V), tl.float32)
        else:
            return tl.zeros((R // 2, ROWS * BLOCK_V), tl.int32)

    @triton.jit
    def _hist_add(acc, dig, sel, p, MASS: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, R: tl.constexpr):
        """Add the tile's tokens where ``sel`` to bin ``dig``: mass ``p``, or a count. Counts go two to an int32
        word (bin 2w + f in the 16-bit field f of word w): half the compare/select/add work of one counter per
        bin, and a lane sees at most CHUNK / BLOCK_V tokens, far below 2^16."""
        d = tl.where(tl.reshape(sel, (ROWS * BLOCK_V,)), tl.reshape(dig, (ROWS * BLOCK_V,)), R)  # R: no bin
        if MASS:
            bins = tl.arange(0, R)
            return acc + tl.where(d[None, :] == bins[:, None], tl.reshape(p, (ROWS * BLOCK_V,))[None, :], 0.0)
        else:
            words = tl.arange(0, R // 2)
            return acc + tl.where((d >> 1)[None, :] == words[:, None], (1 << ((d & 1) * 16))[None, :], 0)

    @triton.jit
    def _hist_store(hist_ptr, part, row_ok, acc, MASS: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
                    R: tl.constexpr):  # fmt: skip
        """Reduce the per-lane histograms and store them, as fp32, at ``hist[part, :]`` (one partial per row and
        chunk)."""
        bins = tl.arange(0, R)
        if MASS:
            h = tl.sum(tl.reshape(acc, (R, ROWS, BLOCK_V)), axis=2)
        else:
            a = tl.reshape(acc, (R // 2, ROWS, BLOCK_V))
            even = tl.sum(a & 0xFFFF, axis=2)
            odd = tl.sum((a >> 16) & 0xFFFF, axis=2)
            h = tl.reshape(tl.permute(tl.join(even, odd), (0, 2, 1)), (R, ROWS)).to(tl.float32)
        tl.store(hist_ptr + part[None, :] * R + bins[:, None], h, mask=row_ok[None, :])

    @triton.jit
    def _stats_kernel(
        logits_ptr, stat_ptr, arg_ptr, hist_ptr, st_i_ptr, st_f_ptr, cnt_ptr,
        B, V, stride_l, inv_temp, S, CHUNK, top_k, shift,
        HIST: tl.constexpr, COUNT: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, R: tl.constexpr,
    ):  # fmt: skip
        # ROWS rows per program: 1 on a GPU, many under the interpreter (numpy vectorises over rows); every
        # per-row scalar is a [ROWS] vector. Program (r, s) owns columns [s * CHUNK, (s + 1) * CHUNK).
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        split = tl.program_id(1)
        row_ok = rows < B
        rows64 = rows.to(tl.int64)
        c0 = split * CHUNK
        cols0 = tl.arange(0, BLOCK_V)
        # per-lane running max / sum-exp / first argmax, reduced across lanes once at the end
        m = tl.full((ROWS, BLOCK_V), -float("inf"), tl.float32)
        s = tl.zeros((ROWS, BLOCK_V), tl.float32)
        best_i = tl.zeros((ROWS, BLOCK_V), tl.int32)
        acc = _hist_zeros(False, ROWS, BLOCK_V, R)
        for v0 in range(0, CHUNK, BLOCK_V):
            cols = c0 + v0 + cols0
            ok = row_ok[:, None] & (cols < V)[None, :]
            x, key = _tile(logits_ptr, cnt_ptr, rows, rows64, row_ok, stride_l, cols, ok, COUNT)
            z = x * inv_temp
            up = z > m
            best_i = tl.where(up, cols[None, :], best_i)
            m_new = tl.maximum(m, z)
            e = tl.exp(tl.minimum(m, z) - tl.where(m_new > -float("inf"), m_new, 0.0))  # one exp: smaller - larger
            s = tl.where(up, s * e + 1.0, s + e)
            m = m_new
            if HIST:  # first top-k digit: counts need no max, so they ride along
                dig = ((key ^ _I32_MIN) >> shift) & (R - 1)
                acc = _hist_add(acc, dig, ok, x, False, ROWS, BLOCK_V, R)
        m_row = tl.max(m, axis=1)
        m_ref = tl.where(m_row > -float("inf"), m_row, 0.0)
        part = rows * S + split
        tl.store(stat_ptr + part * 2, m_row, mask=row_ok)
        tl.store(stat_ptr + part * 2 + 1, tl.sum(s * tl.exp(m - m_ref[:, None]), axis=1), mask=row_ok)
        tl.store(arg_ptr + part, tl.min(tl.where(m == m_row[:, None], best_i, V), axis=1), mask=row_ok)
        if HIST:
            _hist_store(hist_ptr, part, row_ok, acc, False, ROWS, BLOCK_V, R)
            lo = tl.full((ROWS,), _I32_MIN, tl.int32)
            _store_state(st_i_ptr, st_f_ptr, 0, B, rows, row_ok & (rows * 0 + split == 0), lo, lo,
                         tl.zeros((ROWS,), tl.float32), tl.zeros((ROWS,), tl.float32) + top_k)  # fmt: skip

    @triton.jit(do_not_specialize=_STEP_ARGS)
    def _radix_kernel(
        logits_ptr, stat_ptr, hist_ptr, st_i_ptr, st_f_ptr, cnt_ptr,
        B, V, stride_l, inv_temp, S, CHUNK, top_p, par_in, prev, prev_shift, shift,
        MASS: tl.constexpr, COUNT: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, R: tl.constexpr,
        SP: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        split = tl.program_id(1)
        row_ok = rows < B
        rows64 = rows.to(tl.int64)
        c0 = split * CHUNK
        cols0 = tl.arange(0, BLOCK_V)
        lo, hi, tk, above, target = _advance(hist_ptr, st_i_ptr, st_f_ptr, rows, row_ok, B, S, par_in, prev,
                                             prev_shift, top_p, ROWS, R, SP)  # fmt: skip
        par_out = 1 - par_in
        _store_state(st_i_ptr, st_f_ptr, par_out, B, rows, row_ok & (rows * 0 + split == 0), lo, tk, above, target)
        m = tl.zeros((ROWS,), tl.float32)
        if MASS:
            m, _ = _row_max_lse(stat_ptr, rows, row_ok, S, SP)
        lo2 = lo[:, None]
        lo_c2 = tl.maximum(lo, tk)[:, None]  # top-p candidates must also be in the top-k set
        hi2 = hi[:, None]
        m2 = m[:, None]
        acc = _hist_zeros(MASS, ROWS, BLOCK_V, R)
        for v0 in range(0, CHUNK, BLOCK_V):
            cols = c0 + v0 + cols0
            ok = row_ok[:, None] & (cols < V)[None, :]
            x, key = _tile(logits_ptr, cnt_ptr, rows, rows64, row_ok, stride_l, cols, ok, COUNT)
            cand = ok & (key >= lo_c2) & (key <= hi2)
            # after the first digits few tokens remain candidates: tiles without one skip the histogram work
            if tl.sum(cand.to(tl.int32)) > 0:
                dig = ((key - lo2) >> shift) & (R - 1)
                acc = _hist_add(acc, dig, cand, tl.exp(x * inv_temp - m2), MASS, ROWS, BLOCK_V, R)
        _hist_store(hist_ptr, (par_out * B + rows) * S + split, row_ok, acc, MASS, ROWS, BLOCK_V, R)

    @triton.jit(do_not_specialize=_STEP_ARGS)
    def _draw_kernel(
        logits_ptr, seed_ptr, stat_ptr, hist_ptr, st_i_ptr, st_f_ptr, best_ptr, besti_ptr, kept_ptr, cnt_ptr,
        B, V, VQ, stride_l, inv_temp, S, CHUNK, top_p, offset, par_in, prev, prev_shift,
        WRITE_PROBS: tl.constexpr, FAST_LOG: tl.constexpr, COUNT: tl.constexpr, ROWS: tl.constexpr,
        BLOCK_V: tl.constexpr, R: tl.constexpr, SP: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        split = tl.program_id(1)
        row_ok = rows < B
        rows64 = rows.to(tl.int64)
        c0 = split * CHUNK
        cols0 = tl.arange(0, BLOCK_V)
        QB: tl.constexpr = BLOCK_V // 4
        quads0 = tl.arange(0, QB)
        lo, hi, tk, above, target = _advance(hist_ptr, st_i_ptr, st_f_ptr, rows, row_ok, B, S, par_in, prev,
                                             prev_shift, top_p, ROWS, R, SP)  # fmt: skip
        thr = tl.maximum(lo, tk)  # keep key >= thr (int32 min: no cut)
        if WRITE_PROBS:
            tl.store(st_i_ptr + (2 * B + rows) * 2, thr, mask=row_ok & (rows * 0 + split == 0))
        m, _ = _row_max_lse(stat_ptr, rows, row_ok, S, SP)
        seed = tl.load(seed_ptr)
        best = tl.full((ROWS, BLOCK_V), -float("inf"), tl.float32)  # per lane, reduced at the end
        tok = tl.zeros((ROWS, BLOCK_V), tl.int32)
        kept = tl.zeros((ROWS, BLOCK_V), tl.float32)
        for v0 in range(0, CHUNK, BLOCK_V):
            cols = c0 + v0 + cols0
            ok = row_ok[:, None] & (cols < V)[None, :]
            x, key = _tile(logits_ptr, cnt_ptr, rows, rows64, row_ok, stride_l, cols, ok, COUNT)
            d = x * inv_temp - m[:, None]
            keep = ok & (key >= thr[:, None])
            # column 4c + q takes output q of Philox counter c: one call per four columns
            u0, u1, u2, u3 = tl.rand4x(seed, rows64[:, None] * VQ + ((c0 + v0) // 4 + quads0)[None, :] + offset)
            u = tl.reshape(tl.join(tl.join(u0, u2), tl.join(u1, u3)), (ROWS, BLOCK_V))
            # Gumbel score d - log(-log u), less the constant log(ln 2), in base-2 logs
            score = tl.where(keep, d - 0.6931471805599453 * _log2(-_log2(u, FAST_LOG), FAST_LOG), -float("inf"))
            tok = tl.where(score > best, cols[None, :], tok)
            best = tl.maximum(best, score)
            if WRITE_PROBS:
                kept += tl.where(keep, tl.exp(d), 0.0)
        part = rows * S + split
        best_row = tl.max(best, axis=1)
        tl.store(best_ptr + part, best_row, mask=row_ok)
        tl.store(besti_ptr + part, tl.min(tl.where(best == best_row[:, None], tok, V), axis=1), mask=row_ok)
        if WRITE_PROBS:
            tl.store(kept_ptr + part, tl.sum(kept, axis=1), mask=row_ok)

    @triton.jit
    def _finish_kernel(
        logits_ptr, stat_ptr, arg_ptr, best_ptr, besti_ptr, tok_ptr, lp_ptr, B, stride_l, inv_temp, S,
        GREEDY: tl.constexpr, ROWS: tl.constexpr, SP: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        row_ok = rows < B
        m, lse = _row_max_lse(stat_ptr, rows, row_ok, S, SP)
        sp = tl.arange(0, SP)
        ok = row_ok[:, None] & (sp < S)[None, :]
        part = rows[:, None] * S + sp[None, :]
        if GREEDY:  # the first chunk holding the row max, and its first argmax
            win = ok & (tl.load(stat_ptr + part * 2, mask=ok, other=-float("inf")) == m[:, None])
            idx = tl.load(arg_ptr + part, mask=ok, other=0)
        else:  # the chunk with the best Gumbel score
            sc = tl.load(best_ptr + part, mask=ok, other=-float("inf"))
            win = ok & (sc == tl.max(sc, axis=1)[:, None])
            idx = tl.load(besti_ptr + part, mask=ok, other=0)
        first = tl.min(tl.where(win, sp[None, :], SP), axis=1)
        tok = tl.sum(tl.where(sp[None, :] == first[:, None], idx, 0), axis=1)
        z_tok = tl.load(logits_ptr + rows.to(tl.int64) * stride_l + tok, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(tok_ptr + rows, tok.to(tl.int64), mask=row_ok)
        tl.store(lp_ptr + rows, z_tok * inv_temp - lse, mask=row_ok)

    @triton.jit
    def _probs_kernel(
        logits_ptr, stat_ptr, st_i_ptr, kept_ptr, probs_ptr, cnt_ptr, B, V, stride_l, stride_p, inv_temp, S, CHUNK,
        COUNT: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, SP: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        split = tl.program_id(1)
        row_ok = rows < B
        rows64 = rows.to(tl.int64)
        c0 = split * CHUNK
        cols0 = tl.arange(0, BLOCK_V)
        thr = tl.load(st_i_ptr + (2 * B + rows) * 2, mask=row_ok, other=0)
        m, _ = _row_max_lse(stat_ptr, rows, row_ok, S, SP)
        sp = tl.arange(0, SP)
        kept = tl.sum(tl.load(kept_ptr + rows[:, None] * S + sp[None, :], mask=row_ok[:, None] & (sp < S)[None, :],
                              other=0.0), axis=1)  # fmt: skip
        kept = tl.where(row_ok, kept, 1.0)
        for v0 in range(0, CHUNK, BLOCK_V):
            cols = c0 + v0 + cols0
            ok = row_ok[:, None] & (cols < V)[None, :]
            x, key = _tile(logits_ptr, cnt_ptr, rows, rows64, row_ok, stride_l, cols, ok, COUNT)
            keep = key >= thr[:, None]
            out = tl.where(keep, tl.exp(x * inv_temp - m[:, None]) / kept[:, None], 0.0)
            tl.store(probs_ptr + rows64[:, None] * stride_p + cols[None, :], out, mask=ok)


@functools.cache
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _launch_shape(b: int, v: int, device: torch.device, splits: int | None, block: int | None) -> tuple[int, ...]:
    """``(rows per program, chunks per row S, chunk length, block)``: fixed for fixed shapes.

    GPU: one row per program and about four programs per SM in all (a chunk is at least 4 blocks of 1024).
    Interpreter: every row in one program (numpy vectorises over rows) and up to 4 chunks, so the tests run the
    multi-chunk combine. ``splits`` / ``block`` force a layout (tests).
    """
    if interpreting():
        blk = block or max(16, min(64, next_pow2(v)))
        rows = min(4096, next_pow2(b))
        want = 4
    else:
        blk = block or 1024
        rows = 1
        sms = _num_sms(device.index if device.index is not None else torch.cuda.current_device())
        want = max(1, min(triton.cdiv(4 * sms, b), triton.cdiv(triton.cdiv(v, blk), 4)))
    nblk = triton.cdiv(v, blk)
    per = triton.cdiv(nblk, max(1, min(splits or want, nblk)))
    assert per < 2**16, "a lane's 16-bit radix counters would overflow"  # V > 65535 * block
    return rows, triton.cdiv(nblk, per), per * blk, blk


def triton_sample(
    logits: torch.Tensor,
    seed: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    offset: int = 0,
    return_probs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens [B] int64, logprobs [B] fp32[, probs [B, V] fp32])`` for ``logits [B, V]``.

    ``seed`` is a one-element int32/int64 device tensor (advance it in place between steps); ``offset``
    shifts the Philox counters, e.g. to draw independent samples from one seed. Greedy ignores the
    temperature and reports log-probs at temperature 1, like `HFSampler` (its ``probs`` are one-hot).
    """
    return _sample(logits, seed, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, offset=offset,
                   return_probs=return_probs)  # fmt: skip


def _sample(
    logits: torch.Tensor,
    seed: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    offset: int = 0,
    return_probs: bool = False,
    splits: int | None = None,
    block: int | None = None,
    read_counter: torch.Tensor | None = None,
):
    """`triton_sample` with test hooks: ``splits`` / ``block`` force the chunking, ``read_counter`` (int32 [B],
    zeroed by the caller) receives the number of logits each row's launches read."""
    if not HAVE_TRITON:
        raise RuntimeError("triton_sample needs the `triton` package")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    b, v = logits.shape
    dev = logits.device
    tok = torch.empty(b, dtype=torch.int64, device=dev)
    lp = torch.empty(b, dtype=torch.float32, device=dev)
    probs = torch.empty(b, v, dtype=torch.float32, device=dev) if return_probs else lp
    if b == 0:
        return (tok, lp, probs) if return_probs else (tok, lp)
    rows, s, chunk, blk = _launch_shape(b, v, dev, splits, block)
    sp, r = next_pow2(s), _BINS
    steps = _radix_steps(int(top_k), float(top_p), bool(greedy), v, logits.dtype)
    fused = bool(steps) and not steps[0][0]
    # workspace: per-chunk partials and the per-row radix state (two slots, alternating between passes); every
    # piece starts 16-byte aligned, so the kernels compile the same way whatever B and S are
    n_f = [-(-n // 4) * 4 for n in (b * s * 2, 2 * b * s * r, 2 * b * 2, b * s, b * s)]
    n_i = [-(-n // 4) * 4 for n in (b * s, 3 * b * 2, b * s)]
    stat, hist, st_f, best, kept = torch.empty(sum(n_f), dtype=torch.float32, device=dev).split(n_f)
    arg, st_i, besti = torch.empty(sum(n_i), dtype=torch.int32, device=dev).split(n_i)
    inv_temp = 1.0 if greedy else 1.0 / float(temperature)
    count = read_counter is not None
    cnt = read_counter if count else arg
    grid = (triton.cdiv(b, rows), s)
    nw = 1 if interpreting() else 8
    shape = dict(COUNT=count, ROWS=rows, BLOCK_V=blk, num_warps=nw)
    stride = logits.stride(0)
    _stats_kernel[grid](logits, stat, arg, hist, st_i, st_f, cnt, b, v, stride, inv_temp, s, chunk, float(top_k),
                        steps[0][1] if fused else 0, HIST=fused, R=r, **shape)  # fmt: skip
    for j in range(1 if fused else 0, len(steps)):
        _radix_kernel[grid](logits, stat, hist, st_i, st_f, cnt, b, v, stride, inv_temp, s, chunk, float(top_p),
                            (j - 1) % 2, _prev_code(steps, j), steps[j - 1][1] if j else 0, steps[j][1],
                            MASS=steps[j][0], R=r, SP=sp, **shape)  # fmt: skip
    if not greedy:
        n = len(steps)
        _draw_kernel[grid](logits, seed, stat, hist, st_i, st_f, best, besti, kept, cnt, b, v, triton.cdiv(v, 4),
                           stride, inv_temp, s, chunk, float(top_p), int(offset), (n - 1) % 2, _prev_code(steps, n),
                           steps[-1][1] if n else 0, WRITE_PROBS=bool(return_probs), FAST_LOG=not interpreting(), R=r,
                           SP=sp, **shape)  # fmt: skip
    _finish_kernel[(grid[0],)](logits, stat, arg, best, besti, tok, lp, b, stride, inv_temp, s, GREEDY=bool(greedy),
                               ROWS=rows, SP=sp, num_warps=1 if interpreting() else 4)  # fmt: skip
    if return_probs:
        if greedy:
            probs.zero_().scatter_(1, tok[:, None], 1.0)
        else:
            _probs_kernel[grid](logits, stat, st_i, kept, probs, cnt, b, v, stride, probs.stride(0), inv_temp, s,
                                chunk, SP=sp, **shape)  # fmt: skip
    return (tok, lp, probs) if return_probs else (tok, lp)
