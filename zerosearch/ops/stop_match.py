"""Stop conditions on token ids: single stop ids (checked on device every step) and multi-token stop
sequences (checked by the compiled op ``torch.ops.zerosearch.stop_match`` every few steps and at the end).

`stop_match` returns, per row, the length to keep (the first complete stop sequence included) or -1.
Without the compiled extension the Python reference (same semantics) is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zerosearch.ops.library import compiled_op

__all__ = ["stop_match", "stop_match_reference", "pack_stop_sequences"]


def pack_stop_sequences(
    stop_sequences: Sequence[Sequence[int]], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten stop sequences into ``(flat [N], offsets [S + 1])`` int64 tensors."""
    flat = [int(t) for seq in stop_sequences for t in seq]
    offsets = [0]
    for seq in stop_sequences:
        offsets.append(offsets[-1] + len(seq))
    return (torch.tensor(flat, dtype=torch.long, device=device),
            torch.tensor(offsets, dtype=torch.long, device=device))  # fmt: skip


def stop_match_reference(
    tokens: Sequence[Sequence[int]], lengths: Sequence[int], stop_sequences: Sequence[Sequence[int]]
) -> list[int]:
    """Plain Python: smallest ``e <= lengths[b]`` with some stop sequence equal to ``row[e - len:e]``, else -1."""
    out = []
    for row, n in zip(tokens, lengths):
        row = list(row)[: max(0, int(n))]
        found = -1
        for e in range(1, len(row) + 1):
            if any(seq and len(seq) <= e and row[e - len(seq) : e] == list(seq) for seq in stop_sequences):
                found = e
                break
        out.append(found)
    return out


def stop_match(
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    stop_sequences: Sequence[Sequence[int]] | tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Per-row keep length ``[B]`` int64 (-1: no stop sequence in ``tokens[b, :lengths[b]]``), on ``tokens.device``.

    ``stop_sequences`` may be pre-packed by :func:`pack_stop_sequences` (on the tokens' device) to avoid
    re-uploading them every call.
    """
    if isinstance(stop_sequences, tuple) and len(stop_sequences) == 2 and isinstance(stop_sequences[0], torch.Tensor):
        flat, offsets = stop_sequences
    else:
        flat, offsets = pack_stop_sequences(stop_sequences, tokens.device)
    op = compiled_op("stop_match")
    if op is not None:
        return op(tokens, lengths.long(), flat, offsets)
    seqs = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(offsets.numel() - 1)]
    res = stop_match_reference(tokens.tolist(), lengths.tolist(), seqs)
    return torch.tensor(res, dtype=torch.long, device=tokens.device)
