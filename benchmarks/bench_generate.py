"""End-to-end generation: the engine vs Hugging Face `generate` on a simulator-shaped workload.

Workload: ``batch`` queries that share a ``prefix``-token prompt head (the simulator template), each with a
few own tokens, ``new`` sampled tokens each (no early stop, so both sides do the same work). Reports
tokens/s, time and peak-memory ratios engine / HF (measured by ``_harness``, in one process), and on CUDA
the fraction of the memory-bandwidth limit reached (bytes a decode step must read — weights + KV — divided
by a measured device copy bandwidth). Before timing, greedy continuations of both are compared on a float32
copy of the model (sampled tokens differ by random stream, so they cannot be compared directly).

A second row times the engine on ragged budgets (rollout turns end at very different lengths) with
compaction of finished rows on against off.

CPU default: the toy Qwen2 policy size (hidden 128, 3 layers, vocab ~700) at batch 64, prefix 100, 40 new.
``--model`` picks a random-weight Qwen2-architecture model of a real shape instead (``qwen2-0.5b``: Qwen2-0.5B;
``qwen2.5-3b``: Qwen2.5-3B, the paper's simulator and policy size), built directly on the device; any size flag
given overrides the preset's value. The roofline line on CUDA says how close the engine gets to the bandwidth
limit, e.g. ``--device cuda --model qwen2.5-3b --batch 256 --prefix 1536 --new 64``. ``--out FILE`` writes the
numbers as JSON.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _harness import Table, common_parser, compare, resolve_device, write_json

from zerosearch.engine import GenerationEngine, SamplingParams
from zerosearch.engine.models import LeanCausalLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIN_GREEDY_AGREEMENT = 0.9  # fp32 near-ties can flip an argmax and change the rest of that row
# Qwen2-architecture shapes (random weights): vocab, hidden, layers, heads, kv heads, MLP width, tied embeddings
MODELS = {
    "toy": dict(vocab=700, hidden=128, layers=3, heads=4, kv_heads=2, intermediate=256, tie=False),
    "qwen2-0.5b": dict(vocab=151936, hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, tie=True),
    "qwen2.5-3b": dict(vocab=151936, hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, tie=True),
}


def _model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        intermediate_size=args.intermediate, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(4096, args.prefix + 64 + args.new), tie_word_embeddings=args.tie,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a 3B model's random init on the host takes minutes
        model = Qwen2ForCausalLM(cfg)
    return model.to(DTYPES[args.dtype]).eval()


def _prompts(args: argparse.Namespace) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(3, args.vocab, (args.prefix,), generator=g).tolist()
    return [prefix + torch.randint(3, args.vocab, (int(k),), generator=g).tolist()
            for k in torch.randint(4, 12, (args.batch,), generator=g)]  # fmt: skip


@torch.inference_mode()
def run_hf(model: torch.nn.Module, prompts: list[list[int]], new: int, greedy: bool = False) -> list[list[int]]:
    """HF generate on left-padded prompts; returns the new tokens per row."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        att[i, width - len(p) :] = 1
    dev = next(model.parameters()).device
    sample = {} if greedy else dict(do_sample=True, temperature=0.8, top_p=1.0, top_k=0)
    out = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), max_new_tokens=new, min_new_tokens=new,
                         pad_token_id=0, **sample)  # fmt: skip
    return out[:, width:].tolist()


def run_engine(model: torch.nn.Module, prompts: list[list[int]], new: int | list[int], args: argparse.Namespace,
               greedy: bool = False, compact_below: float = 0.5) -> list[list[int]]:  # fmt: skip
    """The engine as the sampler uses it (built per call, like `EngineSampler`); returns the new tokens."""
    params = SamplingParams(greedy=True) if greedy else SamplingParams(temperature=0.8)
    engine = GenerationEngine(LeanCausalLM.from_hf(model), cuda_graph=not args.no_graph, compact_below=compact_below)
    return engine.generate(prompts, max_new_tokens=new, sampling=params, shared_prefix=not args.no_prefix).token_ids


def ragged_budgets(args: argparse.Namespace) -> list[int]:
    """Rollout-turn-like lengths: one row in ``--long-every`` uses the whole budget, the others 1/8 of it."""
    return [args.new if i % args.long_every == 0 else max(1, args.new // 8) for i in range(args.batch)]


def compaction_row(model: torch.nn.Module, prompts: list[list[int]], args: argparse.Namespace,
                   device: torch.device) -> dict:  # fmt: skip
    """Ragged budgets: compaction on (candidate) vs off (reference); both must produce the same greedy rows."""
    budgets = ragged_budgets(args)

    def check(_on, _off) -> dict:
        m32 = copy.deepcopy(model).float()
        on = run_engine(m32, prompts, budgets, args, greedy=True)
        off = run_engine(m32, prompts, budgets, args, greedy=True, compact_below=0.0)
        assert [len(r) for r in on] == budgets == [len(r) for r in off], "a row did not use its whole budget"
        return token_agreement(off, on)

    return compare(
        "ragged budgets: compaction on vs off",
        lambda: run_engine(model, prompts, budgets, args),
        lambda: run_engine(model, prompts, budgets, args, compact_below=0.0),
        device=device, repeats=args.repeats or 3, check=check,
        extra=dict(scenario="compact on/off", batch=args.batch, new=args.new,
                   long_rows=sum(b == args.new for b in budgets), dtype=args.dtype),
    )  # fmt: skip


def token_agreement(want: list[list[int]], got: list[list[int]]) -> dict:
    """Fraction of ``want``'s tokens (position by position) that ``got`` repeats; fails below the minimum."""
    same = sum(a == b for w, g in zip(want, got) for a, b in zip(w, g))
    agreement = same / sum(len(w) for w in want)
    assert agreement >= MIN_GREEDY_AGREEMENT, f"greedy tokens agree on only {agreement:.0%}"
    return {"greedy_token_agreement": agreement}


def greedy_agreement(model: torch.nn.Module, prompts: list[list[int]], args: argparse.Namespace) -> dict:
    """Fraction of greedy tokens (position by position) on which engine and HF agree, on a float32 copy."""
    m32 = copy.deepcopy(model).float()
    few, new = prompts[:8], min(args.new, 8)
    return token_agreement(run_hf(m32, few, new, greedy=True), run_engine(m32, few, new, args, greedy=True))


def _bandwidth_limit(model: torch.nn.Module, args: argparse.Namespace) -> dict:
    """Lower bound on decode time: every step reads all weights + the live KV once at measured copy speed."""
    n = 256 * 2**20
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        b.copy_(a)
    torch.cuda.synchronize()
    bw = 2 * n * 20 / (time.perf_counter() - t0)  # read + write bytes per second
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_tok = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
    suffix = 8 + args.new / 2  # average own tokens live per row during decode
    kv = per_tok * (args.prefix + args.batch * suffix)  # prefix once (shared) + each row's own KV
    step_s = (wbytes + kv) / bw
    return {"copy_bandwidth_Bps": bw, "weight_bytes": wbytes, "kv_bytes_per_step": kv,
            "limit_tokens_per_s": args.batch / step_s}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[common_parser()])
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--model", choices=list(MODELS), default="toy", help="a preset shape (random weights)")
    p.add_argument("--vocab", type=int, help="overrides the preset")
    p.add_argument("--hidden", type=int, help="overrides the preset")
    p.add_argument("--layers", type=int, help="overrides the preset")
    p.add_argument("--heads", type=int, help="overrides the preset")
    p.add_argument("--kv-heads", type=int, help="overrides the preset")
    p.add_argument("--intermediate", type=int, help="MLP width; overrides the preset")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prefix", type=int, default=100)
    p.add_argument("--new", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-graph", action="store_true")
    p.add_argument("--no-prefix", action="store_true")
    p.add_argument("--long-every", type=int, default=8,
                   help="ragged scenario: every N-th row runs the whole budget, the others 1/8 of it")  # fmt: skip
    p.add_argument("--no-ragged", action="store_true", help="skip the compaction on/off row")
    p.add_argument("--quick", action="store_true", help="batch 4, prefix 16, 4 new tokens (smoke test)")
    args = p.parse_args(argv)
    for key, value in MODELS[args.model].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    device = resolve_device(p, args.device)
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if args.quick:
        args.batch, args.prefix, args.new = 4, 16, 4
    torch.set_num_threads(args.threads)

    model = _model(args, device)
    prompts = _prompts(args)
    row = compare(
        "engine vs hf generate",
        lambda: run_engine(model, prompts, args.new, args),
        lambda: run_hf(model, prompts, args.new),
        device=device, repeats=args.repeats or 3,
        check=lambda _engine_out, _hf_out: greedy_agreement(model, prompts, args),
        extra=dict(scenario="engine/HF", batch=args.batch, prefix=args.prefix, new=args.new, dtype=args.dtype),
    )  # fmt: skip
    tokens = args.batch * args.new
    row["engine_tokens_per_s"] = tokens / row["candidate_s"]
    row["hf_tokens_per_s"] = tokens / row["reference_s"]
    if device.type == "cuda":
        lim = _bandwidth_limit(model, args)
        row["bandwidth_limit"] = lim
        row["fraction_of_bandwidth_limit"] = row["engine_tokens_per_s"] / lim["limit_tokens_per_s"]
    table = Table([("scenario", "scenario", "s"), ("batch", "batch", "d"), ("new", "new", "d"),
                   ("engine_tokens_per_s", "engine tok/s", ".1f"), ("hf_tokens_per_s", "hf tok/s", ".1f")])  # fmt: skip
    table.header()
    table.row(row)
    rows = [row]
    if not args.no_ragged:
        rows.append(compaction_row(model, prompts, args, device))
        table.row(rows[-1])
    if device.type == "cuda":
        print(f"roofline: engine {row['engine_tokens_per_s']:.0f} tok/s = {row['fraction_of_bandwidth_limit']:.1%} "
              f"of the memory-bandwidth limit ({row['bandwidth_limit']['limit_tokens_per_s']:.0f} tok/s at "
              f"{row['bandwidth_limit']['copy_bandwidth_Bps'] / 1e12:.2f} TB/s measured copy bandwidth)")  # fmt: skip
    config = {k: v for k, v in vars(args).items() if k not in ("out", "device")}
    write_json(args.out, "bench_generate", rows, device, config=config)
    return rows


if __name__ == "__main__":
    main()
