"""Mask of retrieved-document tokens (``<information>…</information>``) in rollouts.

Search results are written by the environment, not sampled by the policy, so their tokens must be
left out of the policy loss, the critic loss and advantage whitening (docs/ARCHITECTURE.md, "The loss
mask"). This module
finds them on token ids, so the mask is exact for the ids that are trained on (no decode /
re-tokenise round trip).

Semantics, per row, left to right:

* outside a span, a complete contiguous match of ``open_ids`` starts a span; inside a span, a
  complete match of ``close_ids`` ends it. Both tags are marked, and every token in between;
* several spans per row; an unclosed span runs to the end of the row;
* a close tag outside a span is an ordinary (unmarked) token run; an open tag inside a span is just
  part of the span (no nesting);
* tokens equal to ``pad_id`` are never marked. For matching they are ordinary tokens: a pad inside a
  multi-token tag breaks that tag, and a pad inside a span does not end it.

The compiled op ``torch.ops.zerosearch.info_span_mask`` (csrc/) does the work on CPU (OpenMP over
rows) and CUDA; without the extension the Python reference is used, with a one-time warning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zerosearch.ops.library import compiled_op

__all__ = ["info_span_mask", "info_span_mask_reference", "policy_loss_mask"]

TagIds = Sequence[int] | torch.Tensor


def _check_tokens(token_ids: torch.Tensor) -> None:
    if not isinstance(token_ids, torch.Tensor):
        raise TypeError(f"token_ids must be a torch.Tensor, got {type(token_ids).__name__}")
    if token_ids.dim() not in (1, 2):
        raise ValueError(f"token_ids must be 1-D [T] or 2-D [B, T], got shape {tuple(token_ids.shape)}")
    if token_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"token_ids must be an int32 or int64 tensor, got {token_ids.dtype}")


def _as_tag(ids: TagIds, name: str, device: torch.device) -> torch.Tensor:
    """Tag ids as a 1-D int64 tensor on ``device``; errors name the argument."""
    if isinstance(ids, torch.Tensor):
        if ids.device != device:
            raise ValueError(f"{name} is on {ids.device} but token_ids is on {device}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got {ids.dtype}")
        tag = ids.reshape(-1) if ids.dim() == 0 else ids
        if tag.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(ids.shape)}")
        tag = tag.to(torch.int64)
    else:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise TypeError(f"{name} must be a sequence of ints or an integer tensor, got {type(ids).__name__}")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TypeError(f"{name} must contain only ints, got {list(ids)!r}")
        tag = torch.tensor(list(ids), dtype=torch.int64, device=device)
    if tag.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    return tag


def _pad_arg(pad_id: int | None) -> int:
    """``pad_id`` as the C++ op wants it: a token id, or -1 for "no padding"."""
    if pad_id is None:
        return -1
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise TypeError(f"pad_id must be an int or None, got {type(pad_id).__name__}")
    return pad_id if pad_id >= 0 else -1


def info_span_mask(
    token_ids: torch.Tensor, open_ids: TagIds, close_ids: TagIds, pad_id: int | None = None
) -> torch.Tensor:
    """Bool mask, same shape and device as ``token_ids``, of tokens inside open…close spans.

    ``token_ids`` is ``[B, T]`` or ``[T]`` (int32/int64); ``open_ids`` / ``close_ids`` are the token ids
    of the tags (one or several tokens each); ``pad_id`` (None or negative: no padding) is never
    marked. See the module docstring for the exact rules.
    """
    _check_tokens(token_ids)
    open_t = _as_tag(open_ids, "open_ids", token_ids.device)
    close_t = _as_tag(close_ids, "close_ids", token_ids.device)
    op = compiled_op("info_span_mask")
    if op is not None:
        return op(token_ids, open_t, close_t, _pad_arg(pad_id))
    return info_span_mask_reference(token_ids, open_t, close_t, pad_id)


def info_span_mask_reference(
    token_ids: torch.Tensor, open_ids: TagIds, close_ids: TagIds, pad_id: int | None = None
) -> torch.Tensor:
    """Plain Python implementation of :func:`info_span_mask`, the oracle for tests and benchmarks.

    Written independently of the kernels (list slicing, no shared state machine) so that a bug in
    one is not silently repeated in the other.
    """
    _check_tokens(token_ids)
    open_tag = _as_tag(open_ids, "open_ids", token_ids.device).tolist()
    close_tag = _as_tag(close_ids, "close_ids", token_ids.device).tolist()
    pad = _pad_arg(pad_id)
    rows = token_ids.reshape(-1, token_ids.shape[-1]).tolist() if token_ids.numel() else []
    marks: list[list[bool]] = []
    for row in rows:
        marked = [False] * len(row)
        inside, t = False, 0
        while t < len(row):
            tag = close_tag if inside else open_tag
            if row[t : t + len(tag)] == tag:  # a whole tag: mark it and flip in/out
                for k in range(t, t + len(tag)):
                    marked[k] = True
                inside = not inside
                t += len(tag)
            else:
                marked[t] = inside
                t += 1
        marks.append([m and tok != pad for m, tok in zip(marked, row)])
    out = torch.tensor(marks, dtype=torch.bool) if marks else torch.zeros(0, dtype=torch.bool)
    return out.reshape(token_ids.shape).to(token_ids.device)


def policy_loss_mask(response_mask: torch.Tensor, info_mask: torch.Tensor) -> torch.Tensor:
    """Tokens the policy is trained on: response tokens that are not retrieved documents.

    One mask for the policy loss, critic loss and advantage whitening. Both masks must be
    bool or integer 0/1 tensors: a float "mask" is refused because ``.bool()`` would silently turn any
    non-zero weight (0.5, NaN) into "train on this token".
    """
    for name, m in (("response_mask", response_mask), ("info_mask", info_mask)):
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
        if m.dtype.is_floating_point or m.dtype.is_complex:
            raise TypeError(f"{name} must be a bool (or integer 0/1) tensor, got {m.dtype}")
    if response_mask.shape != info_mask.shape:
        raise ValueError(
            f"response_mask and info_mask must have the same shape, got "
            f"{tuple(response_mask.shape)} and {tuple(info_mask.shape)}"
        )
    if response_mask.device != info_mask.device:
        raise ValueError(f"response_mask is on {response_mask.device} but info_mask is on {info_mask.device}")
    return response_mask.bool() & ~info_mask.bool()
