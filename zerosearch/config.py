"""Run configuration: nested dataclasses, YAML files and dotted CLI overrides (`trainer.lr=1e-5`).

One typed object travels through the pipeline, so a typo in an override fails at start-up with the list
of valid keys instead of hours later.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Choices of every enumerated key. Every module that checks one of these imports it from here.
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2", "xformers")
PACKING_MODES = ("auto", "on", "off")
GENERATION_BACKENDS = ("engine", "hf")
SEARCH_BACKENDS = ("simulator", "bm25", "openai", "retriever", "web", "dense")
ALGOS = ("grpo", "ppo", "reinforce_pp")
KL_TYPES = ("k1", "k2", "k3")
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
LR_SCHEDULES = ("constant", "cosine")
ON_NONFINITE = ("skip", "stop")


@dataclass
class ModelConfig:
    policy_path: str = ""  # HF checkpoint dir; empty in the toy world (filled by the toy pipeline)
    simulator_path: str = ""
    tokenizer_path: str = ""
    dtype: str = "float32"  # one of DTYPES
    gradient_checkpointing: bool = False
    attn_implementation: str = "auto"  # one of ATTN_IMPLEMENTATIONS
    # padding-free training forward: auto (= on under flash_attention_2 / xformers) | on | off
    packed_sequences: str = "auto"


@dataclass
class DataConfig:
    train_path: str = ""
    test_path: str = ""
    corpus_path: str = ""  # jsonl {"id","contents"} for the real (BM25 / dense) search
    max_test_examples: int = 0  # 0 = every test row


@dataclass
class GenerationConfig:
    """How the policy and a local simulator generate: one backend for both."""

    backend: str = "engine"  # engine (zerosearch.engine: static KV cache, shared prefix, CUDA graphs) | hf
    cuda_graph: bool = True  # engine on CUDA: replay one captured decode step
    shared_prefix: bool = True  # engine: prefill the prompts' common token prefix once


@dataclass
class RolloutConfig:
    n_samples: int = 4  # rollouts per question (a GRPO group)
    max_turns: int = 3  # turns that may search; one more turn follows in which a search is not run
    max_new_tokens: int = 48  # per turn
    max_context: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    max_query_chars: int = 256


@dataclass
class SearchConfig:
    """The search engine rollouts call: the LLM simulator (local or served) or a real engine."""

    backend: str = "simulator"  # one of SEARCH_BACKENDS
    top_k: int = 5
    timeout: float = 30.0
    max_retries: int = 3
    concurrency: int = 8  # HTTP requests in flight at once (openai, web)
    # the simulator (backend simulator or openai)
    batch_prompts: int = 32  # openai: prompts per /v1/completions request (list form); 1 = one prompt per request
    base_url: str = ""  # openai-compatible server, e.g. http://localhost:8000/v1
    model: str = ""
    temperature: float = 0.8
    max_new_tokens: int = 96
    answer_in_noisy: bool = False
    # real engines
    retriever_url: str = ""  # Search-R1 retrieval server for backend=retriever, e.g. http://127.0.0.1:8000/retrieve
    web_url: str = "https://google.serper.dev/search"  # Serper-shaped Google search API for backend=web
    web_api_key_env: str = "SERPER_API_KEY"  # name of the env variable holding the web API key (never the key)
    dense_encoder_path: str = ""  # local E5-style encoder dir for backend=dense (corpus: data.corpus_path)
    dense_index_cache: str = ""  # optional .pt cache of the dense passage embeddings


@dataclass
class ServeConfig:
    """`zerosearch simulate --serve`: batching and the server's limits (SECURITY.md states each one)."""

    max_batch: int = 64  # prompts per generator batch
    batch_window_ms: float = 200.0  # the longest a partial batch waits for more prompts (see generation/scheduler.py)
    max_concurrency: int = 64  # completion requests admitted at once (queued or generating); more get 503
    max_connections: int = 128  # open connections; at the cap the longest-reading one is evicted, else 503
    max_prompts_per_request: int = 256  # prompts times n
    max_prompt_tokens: int = 4096  # longer prompts get 400 before queueing
    max_tokens_cap: int = 2048  # largest max_tokens accepted
    max_body_bytes: int = 1_000_000
    request_timeout: float = 30.0  # seconds to receive a whole request (request line, headers and body)
    generation_timeout: float = 60.0  # seconds a request may wait for its completion; then 504


@dataclass
class CurriculumConfig:
    p_start: float = 0.0
    p_end: float = 0.5
    base: float = 4.0


@dataclass
class TrainerConfig:
    algo: str = "grpo"  # one of ALGOS
    steps: int = 40
    batch_questions: int = 16
    ppo_epochs: int = 1
    mini_batches: int = 2
    lr: float = 1e-4
    critic_lr: float = 1e-4
    warmup_steps: int = 3
    lr_schedule: str = "constant"  # constant (the paper's actor) | cosine (down to min_lr_ratio · lr at the last step)
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    kl_coef: float = 0.001
    kl_type: str = "k3"  # one of KL_TYPES
    entropy_coef: float = 0.001
    gamma: float = 1.0
    lam: float = 1.0
    value_clip: float = 0.5
    agg: str = "token-mean"  # one of AGG_MODES
    on_nonfinite: str = "skip"  # one of ON_NONFINITE
    checkpoint_every: int = 10
    keep_checkpoints: int = 2


@dataclass
class RunConfig:
    seed: int = 0
    out_dir: str = "runs/toy"
    cache_dir: str = ".cache/zerosearch"
    device: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def _coerce(value: str, current: Any) -> Any:
    """Parse an override string with YAML, then check it fits the field's current type."""
    parsed = yaml.safe_load(value) if isinstance(value, str) else value
    if current is None or parsed is None:
        return parsed
    if isinstance(current, bool):
        if not isinstance(parsed, bool):
            raise ValueError(f"expected true/false, got {value!r}")
        return parsed
    if isinstance(current, float) and not isinstance(parsed, bool):
        try:
            return float(parsed)  # YAML 1.1 reads "3e-5" as a string
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if isinstance(current, int) and isinstance(parsed, int) and not isinstance(parsed, bool):
        return parsed
    if isinstance(current, str):
        return str(parsed) if not isinstance(value, str) else value
    if not isinstance(parsed, type(current)):
        raise ValueError(f"expected {type(current).__name__}, got {value!r}")
    return parsed


def apply_overrides(cfg: Any, overrides: dict[str, Any] | list[str]) -> Any:
    """Set `a.b.c=value` entries on a nested dataclass; unknown keys raise with the valid choices."""
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides)
    for key, value in items:
        node, parts = cfg, key.split(".")
        for part in parts[:-1]:
            node = _child(node, part, key)
        leaf = parts[-1]
        if isinstance(value, dict):
            apply_overrides(_child(node, leaf, key), value)
            continue
        _child(node, leaf, key)
        try:
            setattr(node, leaf, _coerce(value, getattr(node, leaf)))
        except ValueError as exc:
            raise ValueError(f"config key {key!r}: {exc}") from None
    return cfg


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    return key.strip(), value


def _child(node: Any, name: str, full_key: str) -> Any:
    names = [f.name for f in dataclasses.fields(node)]
    if name not in names:
        raise ValueError(f"unknown config key {full_key!r}; valid keys here: {', '.join(names)}")
    return getattr(node, name)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file (if any), then CLI overrides."""
    cfg = RunConfig()
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping at top level")
        apply_overrides(cfg, data)
    if overrides:
        apply_overrides(cfg, overrides)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(config_to_dict(cfg))), sort_keys=False))
