"""`zerosearch simulate`: the simulator's documents for one query, or the simulator served over HTTP."""

from __future__ import annotations

import argparse
import sys

from zerosearch.config import RunConfig

NAME = "simulate"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("simulate", help="print the simulator's documents for one query, or serve the simulator",
                       description="Print the simulator's documents for one query (--query), or, with --serve, "
                       "serve model.simulator_path as an OpenAI-compatible /v1/completions server that "
                       "`search.backend=openai` runs can use (see SECURITY.md). The server batches concurrent "
                       "requests (up to serve.max_batch prompts) and generates with the configured "
                       "generation.backend (engine by default); its limits are the config section serve.*.")
    p.add_argument("--query", help="the search query (required unless --serve or --eval)")
    p.add_argument("--eval", metavar="PAIRS",
                   help="measure the simulator on held-out pairs JSONL (query, question, golden_answers, documents, "
                   "useful): useful recall, noisy leak rate, format validity, mean length, agreement with the real "
                   "engine's label; prints a table and writes out_dir/simulator-eval.json")
    p.add_argument("--eval-out", help="--eval: where to write the JSON (default out_dir/simulator-eval.json)")
    p.add_argument("--question", default="")
    p.add_argument("--answer", action="append", default=[], help="gold answer (repeatable)")
    p.add_argument("--noisy", action="store_true", help="ask for noisy documents instead of useful ones")
    p.add_argument("--serve", action="store_true",
                   help="serve the simulator over HTTP (POST /v1/completions, GET /v1/models, GET /health)")
    p.add_argument("--host", default="127.0.0.1",
                   help="--serve: address to bind (default 127.0.0.1; anything else is reachable from other hosts)")
    p.add_argument("--port", type=_port, default=8000, help="--serve: port (default 8000; 0 picks a free one)")
    p.add_argument("--max-concurrency", type=int, default=None,
                   help="--serve: completion requests admitted at once, queued or generating; more get HTTP 503 "
                   "(default: serve.max_concurrency)")
    return p


def _port(text: str) -> int:
    """A TCP port, checked while the arguments are parsed (long before the model loads)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in [0, 65535], got {port}")
    return port


def run(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.build import build_generator, build_search, load_simulator, simulator_name
    from zerosearch.search import NoiseCurriculum, SearchRequest

    if args.serve:
        import dataclasses

        from zerosearch.search.server import check_listen_address, resolve_limits, serve

        limits = dataclasses.asdict(cfg.serve)
        if args.max_concurrency is not None:
            limits["max_concurrency"] = args.max_concurrency
        resolve_limits(limits)  # bad limits, a bad or busy address: fail before the model loads
        check_listen_address(args.host, args.port)
        tok, model = load_simulator(cfg)
        serve(build_generator(cfg, model, tok), model_name=simulator_name(cfg), host=args.host, port=args.port,
              **limits)
        return 0
    if args.eval:
        return _evaluate(cfg, args)
    if not args.query:
        raise ValueError("--query is required (or use --serve or --eval)")
    always_noisy = NoiseCurriculum(1, p_start=1.0, p_end=1.0) if args.noisy else None
    search = build_search(cfg, curriculum=always_noisy)
    [res] = search.search([SearchRequest(0, args.query, args.question, args.answer)])
    for i, doc in enumerate(res.documents):
        print(f"Doc {i + 1}: {doc}")
    if res.fallback:
        print(f"(fallback: {res.error})", file=sys.stderr)
    return 0


def _evaluate(cfg: RunConfig, args) -> int:
    """`simulate --eval`: the simulator asked for useful and for noisy documents on every held-out pair."""
    import json
    from pathlib import Path

    from zerosearch.build import simulator_quality_searches
    from zerosearch.eval.simulator_quality import format_quality_table, simulator_quality
    from zerosearch.rl.sft_data import load_pairs
    from zerosearch.runtime.run_dir import file_problem, writing

    out = Path(args.eval_out or Path(cfg.out_dir) / "simulator-eval.json")
    problem = file_problem(out)
    if problem:
        raise ValueError(f"--eval-out: {problem}")
    pairs = load_pairs(args.eval)
    result = simulator_quality(*simulator_quality_searches(cfg), pairs, top_k=cfg.search.top_k)
    name = cfg.search.model or Path(cfg.model.simulator_path or "simulator").name
    print(format_quality_table({name: result}))
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out):
        out.write_text(json.dumps({name: result}, indent=2))
    print(f"simulator evaluation: {out}")
    return 0
