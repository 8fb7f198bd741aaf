"""info_span_mask: compiled op (CPU, CUDA when present) against the plain Python reference.

The mask decides which tokens the policy is trained on, so the hand-written cases pin the exact
rules (tags included, unclosed spans, stray tags, pads, multi-token tags) and the property tests
check the kernels against the reference on random streams full of whole and partial tags.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zerosearch.ops.info_span_mask import info_span_mask, info_span_mask_reference, policy_loss_mask
from zerosearch.ops.library import has_compiled_op

needs_op = pytest.mark.skipif(not has_compiled_op("info_span_mask"), reason="zerosearch._C not built")
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_compiled_op("info_span_mask")), reason="needs CUDA and zerosearch._C"
)

OPEN, CLOSE, PAD = [7, 8], [9, 8], 0


def op(tokens: torch.Tensor, open_ids, close_ids, pad_id: int | None) -> torch.Tensor:
    """The compiled op called directly (no Python fallback can hide a missing build)."""
    dev = tokens.device
    pad = -1 if pad_id is None else pad_id
    return torch.ops.zerosearch.info_span_mask(
        tokens, torch.tensor(open_ids, device=dev), torch.tensor(close_ids, device=dev), pad
    )


# ---------------------------------------------------------------- hand-written cases (exact rules)

CASES = [
    # (row, expected marks) with OPEN=[7, 8], CLOSE=[9, 8], PAD=0
    ([1, 7, 8, 2, 3, 9, 8, 4], [0, 1, 1, 1, 1, 1, 1, 0]),  # one span, tags included
    ([7, 8, 9, 8, 7, 8, 5, 9, 8], [1] * 9),  # empty span then another, back to back
    ([1, 7, 8, 2, 2, 0, 0], [0, 1, 1, 1, 1, 0, 0]),  # unclosed span; pads never marked
    ([1, 9, 8, 2, 7, 8, 3], [0, 0, 0, 0, 1, 1, 1]),  # close tag outside a span is ignored
    ([7, 8, 7, 8, 3, 9, 8, 3], [1, 1, 1, 1, 1, 1, 1, 0]),  # open inside a span: no nesting
    ([7, 1, 8, 3, 9, 8], [0, 0, 0, 0, 0, 0]),  # tag tokens not contiguous: no match
    ([7, 0, 8, 3], [0, 0, 0, 0]),  # a pad breaks a tag
    ([7, 8, 3, 0, 3, 9, 8, 1], [1, 1, 1, 0, 1, 1, 1, 0]),  # a pad inside a span does not end it
    ([7, 7, 8, 9, 9, 8, 8], [0, 1, 1, 1, 1, 1, 0]),  # overlapping partial tags
    ([1, 2, 7], [0, 0, 0]),  # truncated open tag at the row end
    ([7, 8, 9], [1, 1, 1]),  # truncated close tag at the row end
]


@pytest.mark.parametrize("impl", ["reference", pytest.param("op", marks=needs_op)])
@pytest.mark.parametrize("row,expected", CASES)
def test_hand_written_rows(impl: str, row: list[int], expected: list[int]) -> None:
    tokens = torch.tensor([row])
    fn = info_span_mask_reference if impl == "reference" else op
    got = fn(tokens, OPEN, CLOSE, PAD)
    assert got.dtype == torch.bool and got.shape == tokens.shape
    assert got[0].int().tolist() == expected


@needs_op
def test_single_token_tags_and_batch() -> None:
    tokens = torch.tensor([[5, 1, 6, 1, 5, 1], [1, 5, 5, 6, 6, 1]], dtype=torch.int32)
    expected = [[1, 1, 1, 0, 1, 1], [0, 1, 1, 1, 0, 0]]
    assert info_span_mask(tokens, [5], [6]).int().tolist() == expected


@needs_op
def test_wrapper_shapes_dtypes_and_layouts() -> None:
    row = torch.tensor([1, 7, 8, 2, 9, 8, 3])
    want = torch.tensor([0, 1, 1, 1, 1, 1, 0], dtype=torch.bool)
    assert torch.equal(info_span_mask(row, OPEN, CLOSE), want)  # 1-D in, 1-D out
    assert torch.equal(info_span_mask(row.int(), torch.tensor(OPEN), CLOSE), want)
    batch = torch.stack([row, row.flip(0)], dim=1).t()  # non-contiguous [2, T]
    assert not batch.is_contiguous()
    assert torch.equal(info_span_mask(batch, OPEN, CLOSE), info_span_mask_reference(batch, OPEN, CLOSE))
    for shape in [(0, 5), (3, 0), (0,)]:
        empty = torch.zeros(shape, dtype=torch.int64)
        assert info_span_mask(empty, OPEN, CLOSE).shape == empty.shape
        assert info_span_mask_reference(empty, OPEN, CLOSE).shape == empty.shape


@needs_op
def test_meta_tensors_give_shape_only() -> None:
    tokens = torch.empty(3, 11, dtype=torch.int64, device="meta")
    out = info_span_mask(tokens, torch.tensor(OPEN, device="meta"), torch.tensor(CLOSE, device="meta"))
    assert out.shape == (3, 11) and out.dtype == torch.bool and out.device.type == "meta"


# ------------------------------------------------------------------ property tests vs reference


@st.composite
def streams(draw: st.DrawFn, max_rows: int = 4, max_len: int = 40):
    """Rows built from whole tags, tag fragments, pads and filler over a tiny alphabet.

    The alphabet is small and tags share tokens, so partial and overlapping matches are frequent.
    """
    alphabet = st.integers(1, 5)
    open_ids = draw(st.lists(alphabet, min_size=1, max_size=3))
    close_ids = draw(st.lists(alphabet, min_size=1, max_size=3))
    pad_id = draw(st.sampled_from([None, 0, 3]))
    piece = st.one_of(
        st.just(open_ids),
        st.just(close_ids),
        st.lists(alphabet, min_size=1, max_size=3),
        st.just([0]),
    )
    n_rows = draw(st.integers(1, max_rows))
    rows = []
    for _ in range(n_rows):
        pieces = draw(st.lists(piece, max_size=max_len // 2))
        rows.append([t for p in pieces for t in p][:max_len])
    width = max(len(r) for r in rows)
    rows = [r + [0] * (width - len(r)) for r in rows]  # right-pad like a batch
    dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    tokens = torch.tensor(rows, dtype=dtype).reshape(n_rows, width)
    return tokens, open_ids, close_ids, pad_id


@needs_op
@settings(max_examples=300, deadline=None)
@given(streams())
def test_op_matches_reference(case) -> None:
    tokens, open_ids, close_ids, pad_id = case
    want = info_span_mask_reference(tokens, open_ids, close_ids, pad_id)
    got = op(tokens, open_ids, close_ids, pad_id)
    assert torch.equal(got, want), (tokens.tolist(), open_ids, close_ids, pad_id)
    assert torch.equal(info_span_mask(tokens, open_ids, close_ids, pad_id), want)


@settings(max_examples=200, deadline=None)
@given(streams(max_rows=1, max_len=30))
def test_reference_invariants(case) -> None:
    """Rules that hold whatever the implementation: pads unmarked, opens marked, spans contiguous."""
    tokens, open_ids, close_ids, pad_id = case
    row = tokens[0].tolist()
    marks = info_span_mask_reference(tokens, open_ids, close_ids, pad_id)[0].tolist()
    if pad_id is not None:
        assert not any(m for m, t in zip(marks, row) if t == pad_id)
    first_open = next((i for i in range(len(row)) if row[i : i + len(open_ids)] == open_ids), None)
    if first_open is None:
        assert not any(marks)
    else:
        assert not any(marks[:first_open])
        assert all(m or t == pad_id for m, t in zip(marks[first_open : first_open + len(open_ids)], row[first_open:]))


@needs_op
def test_many_rows_parallel_path() -> None:
    """Large enough for the OpenMP branch; spans straddle arbitrary positions."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 12, (64, 700), generator=gen)
    open_ids, close_ids = [10, 11], [11, 10]
    assert torch.equal(op(tokens, open_ids, close_ids, 0), info_span_mask_reference(tokens, open_ids, close_ids, 0))


# --------------------------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    """Rows longer than the kernel's tile (2048) so state carries over tile boundaries."""
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 12, (37, 5000), generator=gen).to(dtype)
    for open_ids, close_ids in [([10], [11]), ([10, 11, 10], [11, 10]), ([3, 4], [5])]:
        want = op(tokens, open_ids, close_ids, 0)
        got = op(tokens.cuda(), open_ids, close_ids, 0)
        assert got.device.type == "cuda" and torch.equal(got.cpu(), want)


@needs_cuda
@pytest.mark.gpu
@settings(max_examples=100, deadline=None)
@given(streams())
def test_cuda_matches_reference(case) -> None:
    tokens, open_ids, close_ids, pad_id = case
    want = info_span_mask_reference(tokens, open_ids, close_ids, pad_id)
    assert torch.equal(info_span_mask(tokens.cuda(), open_ids, close_ids, pad_id).cpu(), want)


# --------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,exc,pattern",
    [
        (dict(token_ids=torch.zeros(2, 3, 4, dtype=torch.long)), ValueError, "token_ids must be 1-D"),
        (dict(token_ids=torch.zeros(2, 3)), TypeError, "token_ids must be an int32 or int64"),
        (dict(token_ids=[1, 2, 3]), TypeError, "token_ids must be a torch.Tensor"),
        (dict(open_ids=[]), ValueError, "open_ids must not be empty"),
        (dict(close_ids=torch.tensor([], dtype=torch.long)), ValueError, "close_ids must not be empty"),
        (dict(open_ids=[1.5]), TypeError, "open_ids must contain only ints"),
        (dict(close_ids=torch.tensor([1.0])), TypeError, "close_ids must hold integers"),
        (dict(open_ids="<information>"), TypeError, "open_ids must be a sequence"),
        (dict(open_ids=torch.tensor([[1, 2]])), ValueError, "open_ids must be 1-D"),
        (dict(close_ids=torch.tensor([1], device="meta")), ValueError, "close_ids is on meta"),
        (dict(pad_id=1.0), TypeError, "pad_id must be an int"),
    ],
)
@pytest.mark.parametrize("fn", [info_span_mask, info_span_mask_reference])
def test_bad_arguments_name_the_argument(fn, kwargs, exc, pattern) -> None:
    args = dict(token_ids=torch.zeros(2, 3, dtype=torch.long), open_ids=[1], close_ids=[2], pad_id=None)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        fn(**args)


@needs_op
def test_op_rejects_bad_tensors() -> None:
    """The op checks its own inputs too (it is reachable without the wrapper)."""
    f = torch.ops.zerosearch.info_span_mask
    good, tag = torch.zeros(2, 3, dtype=torch.long), torch.tensor([1])
    with pytest.raises(RuntimeError, match="token_ids must be 1-D or 2-D"):
        f(torch.zeros(1, 2, 3, dtype=torch.long), tag, tag, -1)
    with pytest.raises(RuntimeError, match="token_ids must be int32 or int64"):
        f(good.float(), tag, tag, -1)
    with pytest.raises(RuntimeError, match="open_ids must be a non-empty 1-D"):
        f(good, tag[:0], tag, -1)
    with pytest.raises(RuntimeError, match="close_ids must be an integer"):
        f(good, tag, tag.float(), -1)


def test_policy_loss_mask() -> None:
    response = torch.tensor([[1, 1, 1, 1, 0]])
    info = torch.tensor([[False, True, True, False, False]])
    assert policy_loss_mask(response, info).tolist() == [[True, False, False, True, False]]
    with pytest.raises(ValueError, match="same shape"):
        policy_loss_mask(response, info[:, :3])
