"""The Triton kernels of `zerosearch.kernels.sampling` (stats, radix, draw, finish, probs), kept apart from the
launch code and the torch references; the module docstring of `sampling` explains the passes."""

from __future__ import annotations

from triton.language.extra import libdevice

from ._triton import tl, triton

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
