"""Batched generation: shared-prefix prefill, static KV cache, on-device sampling and stop checks.

One `generate` call runs a fixed batch to completion:

1. **Prefix prefill.** The longest token prefix common to all prompts (kept one token short of the
   shortest prompt) is run once with batch 1 and cached without a batch axis.
2. **Suffix prefill.** Each unique prompt's remaining tokens, left-padded to a common width ``W``, attend to
   the prefix (once per KV head for all rows) and causally to themselves; the parts are merged exactly by
   log-sum-exp. The KV rows are then repeated for the ``n`` samples of each prompt.
3. **Decode.** Every row writes its new token at the same slot ``W + j`` (so one scalar slot and static
   shapes suffice); positions are per row (``P + W + j - pad_b``) so left padding never shifts RoPE.
   Sampling happens on device; stop ids and per-row budgets update a device ``done`` mask, and the host
   looks at it only every ``sync_every`` steps (multi-token stop sequences are matched there too, by the
   compiled ``stop_match`` op). On CUDA the step is captured once in a CUDA graph and replayed.

4. **Compaction.** Finished rows keep decoding until the next host check (their extra tokens are cut on
   the host). Rollout turns differ a lot in length (one row answers in 20 tokens, another thinks for 500),
   so when at most ``compact_below`` of the rows are still live at a check, the live rows' KV rows are
   moved to the front of the cache, in place and one layer at a time (no second cache), every per-row
   tensor is cut to them, and the CUDA graph is captured again for the smaller batch. Each compaction at
   least halves the batch, so a call captures at most ``log2(rows)`` extra graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zerosearch.engine.attention import prefill_attention
from zerosearch.engine.cache import StaticKVCache
from zerosearch.engine.decode import DecodeStep
from zerosearch.engine.models.transformer import LeanCausalLM
from zerosearch.engine.models.weights import LMWeights
from zerosearch.engine.sampler import Sampler, SamplingParams
from zerosearch.ops.stop_match import pack_stop_sequences, stop_match

__all__ = ["GenerationEngine", "GenerationOutput", "SamplingParams", "common_prefix_len"]

_PREFILL_SCORE_BYTES = 256 * 2**20  # cap on one prefill chunk's attention scores


@dataclass
class GenerationOutput:
    token_ids: list[list[int]]  # row r = sample r % n of prompt r // n, cut after a stop or at the budget
    logprobs: list[list[float]]  # log-prob of each token under the temperature-scaled distribution
    stopped: list[bool]  # True: ended on a stop id / sequence; False: ran out of budget


def common_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix of all prompts."""
    if not prompts:
        return 0
    first = prompts[0]
    n = min(len(p) for p in prompts)
    for i in range(n):
        t = first[i]
        if any(p[i] != t for p in prompts):
            return i
    return n


class GenerationEngine:
    """Fast batched generation over a `LeanCausalLM` (which may reference a live HF model's parameters)."""

    def __init__(
        self,
        model: LeanCausalLM,
        *,
        pad_id: int = 0,
        use_triton: bool | None = None,
        cuda_graph: bool = True,
        sync_every: int = 8,
        compact_below: float = 0.5,
    ) -> None:
        if not 0.0 <= compact_below < 1.0:
            raise ValueError("compact_below must be in [0, 1) (0 turns compaction off)")
        self.model = model
        self.pad_id = int(pad_id)
        self._use_triton = use_triton
        self.cuda_graph = cuda_graph
        self.sync_every = max(1, int(sync_every))
        self.compact_below = float(compact_below)
        self.last_batch_sizes: list[int] = []  # rows decoded after each compaction of the last call (a record)

    def _triton_on(self, device: torch.device) -> bool:
        if self._use_triton is not None:
            return self._use_triton
        if device.type != "cuda":
            return False
        from zerosearch.kernels.decode_attention import HAVE_TRITON

        return HAVE_TRITON

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int],
        n: int = 1,
        sampling: SamplingParams | None = None,
        stop_ids: Sequence[int] = (),
        stop_sequences: Sequence[Sequence[int]] = (),
        shared_prefix: bool = True,
        seed: int | None = None,
    ) -> GenerationOutput:
        """Continue every prompt ``n`` times. ``max_new_tokens`` is one budget or one per prompt."""
        sampling = sampling or SamplingParams()
        u = len(prompts)
        budgets = [int(max_new_tokens)] * u if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
        if len(budgets) != u:
            raise ValueError("max_new_tokens must be an int or have one entry per prompt")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        rows = u * n
        budget = max(budgets, default=0)
        if rows == 0 or budget <= 0:
            return GenerationOutput([[] for _ in range(rows)], [[] for _ in range(rows)], [False] * rows)

        w = self.model.weights()
        cfg = self.model.config
        dev, dt = w.embed.device, w.embed.dtype
        use_triton = self._triton_on(dev)
        p_len = 0
        if shared_prefix and (u > 1 or n > 1):
            p_len = min(common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
        suffixes = [list(p[p_len:]) for p in prompts]
        width = max(len(s) for s in suffixes)
        start_u = torch.tensor([width - len(s) for s in suffixes], dtype=torch.int32, device=dev)
        cache = StaticKVCache.allocate(cfg, rows, width + budget, p_len, dt, dev)
        scale = cfg.head_dim**-0.5

        if p_len:
            self._prefill_prefix(w, list(prompts[0][:p_len]), cache, scale)
        logits = self._prefill_suffix(w, suffixes, start_u, p_len, cache, n, scale).repeat_interleave(n, 0)
        sampler = Sampler(sampling, dev, seed, use_triton)
        tok, lp = sampler(logits)

        start_b = start_u.repeat_interleave(n)
        pos = (p_len + width - start_b).long()
        max_new = torch.tensor(budgets, device=dev).repeat_interleave(n)
        stop_t = torch.tensor(sorted({int(s) for s in stop_ids}), dtype=torch.long, device=dev)
        packed = pack_stop_sequences(stop_sequences, dev) if stop_sequences else None
        tokens = torch.full((rows, budget), self.pad_id, dtype=torch.long, device=dev)
        lps = torch.zeros(rows, budget, dtype=torch.float32, device=dev)
        done = torch.zeros(rows, dtype=torch.bool, device=dev)

        active = torch.arange(rows, device=dev)  # original row of each row still in the batch
        self.last_batch_sizes = [rows]
        step = self._make_step(w, cache, start_b, pos, width, tok, sampler, scale, use_triton, 0)
        n_gen = budget
        for j in range(budget):
            batch = len(active)
            if batch == rows:
                tokens[:, j] = tok
                lps[:, j] = lp
            else:
                tokens[active, j] = tok
                lps[active, j] = lp
            if stop_t.numel():
                done |= torch.isin(tok, stop_t)
            done |= max_new <= j + 1
            if j + 1 == budget:
                break
            if (j + 1) % self.sync_every == 0:
                if packed is not None:
                    mine = tokens[:, : j + 1] if batch == rows else tokens[active, : j + 1]
                    hit = stop_match(mine, torch.full((batch,), j + 1, device=dev), packed)
                    done |= hit >= 0
                live = batch - int(done.sum())
                if live == 0:
                    n_gen = j + 1
                    break
                if live <= batch * self.compact_below:
                    keep = torch.nonzero(~done).flatten()
                    cache = _compact_cache(cache, keep)
                    start_b, pos, max_new, tok, done, active = (
                        t[keep] for t in (start_b, pos, max_new, tok, done, active)
                    )
                    step = self._make_step(w, cache, start_b, pos, width, tok, sampler, scale, use_triton, j)
                    self.last_batch_sizes.append(live)
            tok, lp = step(j)
        return self._finish(tokens[:, :n_gen], lps[:, :n_gen], budgets, n, stop_ids, stop_sequences)

    # ---- prefill -------------------------------------------------------------------------------------

    def _prefill_prefix(self, w: LMWeights, ids: list[int], cache: StaticKVCache, scale: float) -> None:
        dev = w.embed.device
        x = torch.tensor([ids], dtype=torch.long, device=dev)
        pos = torch.arange(len(ids), device=dev)[None]
        zero = torch.zeros(1, dtype=torch.int32, device=dev)

        def attend(i, q, k, v):
            cache.prefix_k[i].copy_(k[0].transpose(0, 1))
            cache.prefix_v[i].copy_(v[0].transpose(0, 1))
            return prefill_attention(q, k, v, zero, None, None, scale)

        self.model.hidden_states(x, pos, attend, w)

    def _prefill_suffix(
        self, w: LMWeights, suffixes: list[list[int]], start_u: torch.Tensor, p_len: int, cache: StaticKVCache,
        n: int, scale: float,
    ) -> torch.Tensor:  # fmt: skip
        """Prefill in row chunks (bounded score memory); returns last-position logits ``[U, V]``."""
        dev = w.embed.device
        cfg = self.model.config
        u, width = len(suffixes), max(len(s) for s in suffixes)
        ids = torch.full((u, width), self.pad_id, dtype=torch.long)
        for r, s in enumerate(suffixes):
            ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        ids = ids.to(dev)
        cols = torch.arange(width, device=dev)
        pos = p_len + (cols[None, :] - start_u[:, None].long()).clamp_min(0)
        per_row = cfg.num_heads * width * (width + p_len) * 8
        chunk = max(1, _PREFILL_SCORE_BYTES // max(1, per_row))
        out = []
        for r0 in range(0, u, chunk):
            r1 = min(u, r0 + chunk)
            st = start_u[r0:r1]

            def attend(i, q, k, v, r0=r0, r1=r1, st=st):
                kt, vt = k.transpose(1, 2), v.transpose(1, 2)  # [b, Hkv, W, D]
                cache.k[i, r0 * n : r1 * n, :, :width] = kt.repeat_interleave(n, 0)
                cache.v[i, r0 * n : r1 * n, :, :width] = vt.repeat_interleave(n, 0)
                pk = cache.prefix_k[i] if cache.prefix_k is not None else None
                pv = cache.prefix_v[i] if cache.prefix_v is not None else None
                return prefill_attention(q, k, v, st, pk, pv, scale)

            hidden = self.model.hidden_states(ids[r0:r1], pos[r0:r1], attend, w)
            out.append(self.model.logits(hidden[:, -1], w))
        return torch.cat(out)

    # ---- decode --------------------------------------------------------------------------------------

    def _make_step(self, w, cache, start_b, pos, width, tok, sampler, scale, use_triton, first: int):
        """``step(j) -> (tok, lp)`` that feeds the current token and samples the next one, starting at ``first``;
        captured in a CUDA graph on CUDA."""
        step = DecodeStep(self.model, w, cache, start_b, pos, width, tok, sampler, scale, use_triton, first)
        if w.embed.device.type == "cuda" and self.cuda_graph:
            from zerosearch.engine.cuda_graph import GraphedDecode

            return GraphedDecode(step)
        return step

    # ---- output --------------------------------------------------------------------------------------

    @staticmethod
    def _finish(tokens, lps, budgets, n, stop_ids, stop_sequences) -> GenerationOutput:
        """Cut each row after its first stop id / stop sequence or at its own budget (host side, once)."""
        rows, width = tokens.shape
        limit = torch.tensor([min(budgets[r // n], width) for r in range(rows)], dtype=torch.long)
        tok_cpu, lp_cpu = tokens.cpu(), lps.cpu()
        cut = limit.clone()
        stopped = torch.zeros(rows, dtype=torch.bool)
        if stop_ids:
            hit = torch.isin(tok_cpu, torch.tensor(list(stop_ids), dtype=torch.long))
            hit &= torch.arange(width)[None, :] < limit[:, None]
            any_hit = hit.any(dim=1)
            first = hit.float().argmax(dim=1) + 1
            cut = torch.where(any_hit, first, cut)
            stopped |= any_hit
        if stop_sequences:
            e = stop_match(tok_cpu, limit, stop_sequences)
            cut = torch.where(e >= 0, torch.minimum(e, cut), cut)
            stopped |= e >= 0
        ids = [tok_cpu[r, : cut[r]].tolist() for r in range(rows)]
        lp = [lp_cpu[r, : cut[r]].tolist() for r in range(rows)]
        return GenerationOutput(ids, lp, stopped.tolist())


def _compact_cache(cache: StaticKVCache, keep: torch.Tensor) -> StaticKVCache:
    """Move rows ``keep`` (ascending) to the front of the cache, in place, and return a view of just them.

    One layer at a time, so the only temporary is one layer's live rows; the freed rows stay allocated
    (memory is not the point, the decode FLOPs of finished rows are).
    """
    m = keep.numel()
    for i in range(cache.k.shape[0]):
        cache.k[i, :m] = cache.k[i, keep]
        cache.v[i, :m] = cache.v[i, keep]
    return StaticKVCache(cache.k[:, :m], cache.v[:, :m], cache.prefix_k, cache.prefix_v)
