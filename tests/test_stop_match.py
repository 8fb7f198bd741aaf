"""Multi-token stop sequences: the compiled op against a Python reference, and exact cuts in the engine."""

import pytest
import torch

from zerosearch.engine import GenerationEngine, SamplingParams
from zerosearch.ops.library import has_compiled_op
from zerosearch.ops.stop_match import stop_match, stop_match_reference


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny model: one intra-op thread avoids spin-waiting on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _case(seed, rows=40, width=30, vocab=5):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (rows, width), generator=g)
    lengths = torch.randint(0, width + 3, (rows,), generator=g)  # some beyond the width: clipped
    stops = [[1, 2, 3], [4], [], [2, 2], [0, 1, 0, 1]]
    return tokens, lengths, stops


def test_reference_by_hand():
    assert stop_match_reference([[5, 1, 2, 9, 1, 2]], [6], [[1, 2]]) == [3]
    assert stop_match_reference([[5, 1, 2, 9]], [2], [[1, 2]]) == [-1]  # match would end past the length
    assert stop_match_reference([[7, 7, 3]], [3], [[7, 3], [9]]) == [3]
    assert stop_match_reference([[1]], [1], [[]]) == [-1]


@pytest.mark.skipif(not has_compiled_op("stop_match"), reason="compiled extension not built")
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_op_matches_reference(dtype, seed):
    tokens, lengths, stops = _case(seed)
    got = stop_match(tokens.to(dtype), lengths, stops)
    want = stop_match_reference(tokens.tolist(), lengths.tolist(), stops)
    assert got.tolist() == want
    assert any(w > 0 for w in want) and any(w == -1 for w in want)  # both outcomes are exercised


@pytest.mark.skipif(not has_compiled_op("stop_match"), reason="compiled extension not built")
def test_compiled_op_edge_cases():
    empty = torch.zeros(0, 4, dtype=torch.long)
    assert stop_match(empty, torch.zeros(0, dtype=torch.long), [[1]]).numel() == 0
    tok = torch.tensor([[3, 1, 2]])
    assert stop_match(tok, torch.tensor([3]), []).tolist() == [-1]  # no stop sequences at all
    with pytest.raises(RuntimeError):
        torch.ops.zerosearch.stop_match(tok, torch.tensor([3, 3]), torch.tensor([1]), torch.tensor([0, 1]))


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and has_compiled_op("stop_match")), reason="needs CUDA and _C")
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_cuda_op_matches_reference(dtype):
    for seed in range(3):  # rows wider than a block's 128 threads; lengths past the width are clipped
        tokens, lengths, stops = _case(seed, rows=300, width=300)
        got = stop_match(tokens.to(dtype).cuda(), lengths.cuda(), stops)
        assert got.device.type == "cuda" and got.dtype == torch.int64
        assert got.cpu().tolist() == stop_match_reference(tokens.tolist(), lengths.tolist(), stops)


def test_engine_cuts_stop_sequences_exactly():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from zerosearch.engine.models import LeanCausalLM

    cfg = Qwen2Config(vocab_size=11, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=48, initializer_range=0.3)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg).eval()
    eng = GenerationEngine(LeanCausalLM.from_hf(model), sync_every=2)
    prompts = [[3, 4, 5], [6, 7], [8, 9, 10, 3]]
    greedy = SamplingParams(greedy=True)
    free = eng.generate(prompts, max_new_tokens=16, sampling=greedy).token_ids
    seq = free[0][5:7]  # a two-token sequence that occurs in row 0
    got = eng.generate(prompts, max_new_tokens=16, sampling=greedy, stop_sequences=[seq, [99, 98]])
    want = stop_match_reference(free, [16] * 3, [seq, [99, 98]])
    for row, full, cut in zip(got.token_ids, free, want):
        assert row == (full[:cut] if cut > 0 else full)
    assert got.stopped[0] and got.token_ids[0][-2:] == seq
