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

from ._triton import HAVE_TRITON, interpreting, next_pow2, triton

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
    from ._sampling_jit import _draw_kernel, _finish_kernel, _probs_kernel, _radix_kernel, _stats_kernel


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
