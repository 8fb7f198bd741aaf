"""Build the pieces of a run from its config: models, the generator, the curriculum, the search backend, the runner.

Everything is read from local paths (never a hub): the toy pipeline fills the paths with its own assets,
a real run points them at Hugging Face checkpoints and Search-R1-layout data on disk. Each piece is built
in exactly one function here, so the trainer, evaluation, the toy pipeline and the server cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from zerosearch.config import GENERATION_BACKENDS, SEARCH_BACKENDS, RunConfig
from zerosearch.generation import EngineGenerator, Generator, HFGenerator
from zerosearch.hf.loading import ensure_tag_tokens, existing_path, load_causal_lm, load_tokenizer, resolve_dtypes
from zerosearch.rollout.runner import RolloutRunner
from zerosearch.search import (
    BM25Search,
    DenseRetrieverSearch,
    NoiseCurriculum,
    OpenAISimulator,
    RetrievalServerSearch,
    SimulatorSearch,
    WebSearch,
)


def load_policy(cfg: RunConfig, device: str | None = None, *, trainable: bool = True):
    """Tokenizer and policy from their paths, with the protocol tags guaranteed to be single tokens.

    A policy to be trained keeps `model.dtype`'s weight dtype and computes in its compute dtype (mixed
    precision on CUDA by default); one for inference only is stored in the compute dtype.
    """
    from zerosearch.rl.forward import set_compute_dtype

    device = device or cfg.device
    tok = load_tokenizer(cfg.model.tokenizer_path or cfg.model.policy_path)
    policy = load_causal_lm(cfg.model.policy_path, cfg.model.dtype, device,
                            attn_implementation=cfg.model.attn_implementation, trainable=trainable)
    ensure_tag_tokens(tok, policy)
    set_compute_dtype(policy, resolve_dtypes(cfg.model.dtype, device)[1])
    return tok, policy


def load_simulator(cfg: RunConfig, *, trainable: bool = False, device: str | None = None):
    """Tokenizer and model of the local simulator (`model.simulator_path`); `trainable` (for `zerosearch sft`)
    keeps the weight dtype of `model.dtype` and computes in its compute dtype, as `load_policy` does."""
    from zerosearch.rl.forward import set_compute_dtype

    if not cfg.model.simulator_path:
        raise ValueError("model.simulator_path is not set in the config")
    device = device or cfg.device
    tok = load_tokenizer(cfg.model.tokenizer_path or cfg.model.simulator_path)
    model = load_causal_lm(cfg.model.simulator_path, cfg.model.dtype, device,
                           attn_implementation=cfg.model.attn_implementation, trainable=trainable).eval()
    if trainable:
        set_compute_dtype(model, resolve_dtypes(cfg.model.dtype, device)[1])
    return tok, model


def build_generator(cfg: RunConfig, model, tokenizer) -> Generator:
    """The configured generator (`generation.backend`) over a loaded causal LM."""
    g = cfg.generation
    if g.backend not in GENERATION_BACKENDS:
        raise ValueError(f"generation.backend must be one of {list(GENERATION_BACKENDS)}, not {g.backend!r}")
    compute = resolve_dtypes(cfg.model.dtype, next(model.parameters()).device)[1]
    if g.backend == "hf":
        return HFGenerator(model, tokenizer, compute_dtype=compute)
    return EngineGenerator(model, tokenizer, shared_prefix=g.shared_prefix, cuda_graph=g.cuda_graph,
                           compute_dtype=compute)


def build_curriculum(cfg: RunConfig) -> NoiseCurriculum:
    """The noise schedule over the run's steps (`curriculum.*`, `trainer.steps`)."""
    c = cfg.curriculum
    return NoiseCurriculum(cfg.trainer.steps, c.p_start, c.p_end, c.base)


def build_search(cfg: RunConfig, *, curriculum: NoiseCurriculum | None, simulator: Generator | None = None,
                 cache_size: int = 0):
    """The search backend named by `search.backend`. A local simulator is loaded from `model.simulator_path`
    unless a `simulator` generator is given."""
    s = cfg.search
    if s.backend not in SEARCH_BACKENDS:
        raise ValueError(f"search.backend must be one of {list(SEARCH_BACKENDS)}, not {s.backend!r}")
    if s.backend == "bm25":
        return BM25Search.from_jsonl(existing_path(cfg.data.corpus_path, "data.corpus_path"), top_k=s.top_k)
    if s.backend == "openai":
        if not s.base_url:
            raise ValueError("search.backend=openai needs search.base_url (e.g. http://localhost:8000/v1)")
        return OpenAISimulator(s.base_url, s.model, timeout=s.timeout, max_retries=s.max_retries,
                               concurrency=s.concurrency, batch_prompts=s.batch_prompts, curriculum=curriculum,
                               seed=cfg.seed, top_k=s.top_k, temperature=s.temperature, max_tokens=s.max_new_tokens,
                               answer_in_noisy=s.answer_in_noisy)
    if s.backend == "retriever":
        if not s.retriever_url:
            raise ValueError("search.backend=retriever needs search.retriever_url (e.g. http://127.0.0.1:8000/retrieve)")
        return RetrievalServerSearch(s.retriever_url, top_k=s.top_k, timeout=s.timeout, max_retries=s.max_retries)
    if s.backend == "web":
        return WebSearch(s.web_url, api_key_env=s.web_api_key_env, top_k=s.top_k, timeout=s.timeout,
                         max_retries=s.max_retries, concurrency=s.concurrency)
    if s.backend == "dense":
        return DenseRetrieverSearch.from_jsonl(
            existing_path(cfg.data.corpus_path, "data.corpus_path"),
            existing_path(s.dense_encoder_path, "search.dense_encoder_path"),
            top_k=s.top_k,
            device=cfg.device,
            index_cache=s.dense_index_cache or None,
        )
    if simulator is None:
        sim_tokenizer, sim_model = load_simulator(cfg)
        simulator = build_generator(cfg, sim_model, sim_tokenizer)
    return SimulatorSearch(simulator, curriculum, top_k=s.top_k, seed=cfg.seed, answer_in_noisy=s.answer_in_noisy,
                           cache_size=cache_size, max_new_tokens=s.max_new_tokens, temperature=s.temperature)


def simulator_quality_searches(cfg: RunConfig, simulator: Generator | None = None):
    """Two searches over one simulator (`search.backend`, local or served): one answers every request usefully, the
    other noisily. What `simulate --eval` measures a simulator with."""
    useful = build_search(cfg, curriculum=NoiseCurriculum(1, p_start=0.0, p_end=0.0), simulator=simulator)
    shared = simulator if simulator is not None else getattr(useful, "completer", None)
    noisy = build_search(cfg, curriculum=NoiseCurriculum(1, p_start=1.0, p_end=1.0), simulator=shared)
    return useful, noisy


def build_runner(cfg: RunConfig, generator: Generator, tokenizer, search, *, greedy: bool = False) -> RolloutRunner:
    """Rollouts of the policy behind `generator` against `search`; greedy for evaluation."""
    return RolloutRunner(tokenizer, generator, search, cfg.rollout, greedy=greedy)


def simulator_name(cfg: RunConfig) -> str:
    """The model name the simulator server answers to: `search.model`, else the checkpoint's folder name."""
    return cfg.search.model or Path(cfg.model.simulator_path).name


def build_trainer(cfg: RunConfig, policy, tokenizer, train, *, search=None, curriculum: NoiseCurriculum | None = None):
    """The RL trainer of `policy` on the `train` questions: one curriculum shared by the search backend (the
    simulator's noise) and the trainer (its metrics), rollouts through the configured generator."""
    from zerosearch.rl.trainer import Trainer

    curriculum = curriculum or build_curriculum(cfg)
    if search is None:
        search = build_search(cfg, curriculum=curriculum)
    runner = build_runner(cfg, build_generator(cfg, policy, tokenizer), tokenizer, search)
    return Trainer(cfg, policy, tokenizer, runner, train, curriculum=curriculum)
