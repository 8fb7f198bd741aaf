"""Run configuration: nested dataclasses, YAML files and dotted CLI overrides (`trainer.lr=1e-5`).

One typed object travels through the pipeline, so a typo in an override fails at start-up with the list
of valid keys instead of hours later.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Choices of every enumerated key. Every module that checks one of these imports it from here.
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2", "xformers")
PACKING_MODES = ("auto", "on", "off")
GENERATION_BACKENDS = ("engine", "hf")
SEARCH_BACKENDS = ("simulator", "bm25", "openai", "retriever", "web", "dense")
ALGOS = ("grpo", "ppo", "reinforce_pp")
# veRL's names are accepted too: kl = k1, mse = k2, low_var_kl = k3; abs is |logp - ref|.
KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
KL_TYPES = ("k1", "k2", "k3", "abs", *KL_ALIASES)
GRPO_SINGLETON = ("zero", "reward")
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
LR_SCHEDULES = ("constant", "cosine")
ON_NONFINITE = ("skip", "stop")
# How `zerosearch label` decides useful vs noisy; the judge's API flavour.
LABEL_RULES = ("cover_em", "outcome", "judge")
JUDGE_APIS = ("chat", "completions")
# Backends that are a real engine (what `zerosearch collect` may collect from).
REAL_SEARCH_BACKENDS = ("bm25", "dense", "retriever", "web")


@dataclass
class ModelConfig:
    policy_path: str = ""  # HF checkpoint dir; empty in the toy world (filled by the toy pipeline)
    simulator_path: str = ""
    tokenizer_path: str = ""
    # auto: on CUDA fp32 master weights for what is trained and bf16 compute everywhere (frozen models are stored in
    # bf16); float32 on CPU. An explicit dtype is both the storage and the compute dtype.
    dtype: str = "auto"
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
    # GRPO: a group of one answer gets advantage 0 (zero) or its raw reward (reward, as veRL: mean 0, std 1)
    grpo_singleton: str = "zero"  # one of GRPO_SINGLETON
    grpo_norm_by_std: bool = True  # false: advantage = reward - group mean (Dr. GRPO)
    on_nonfinite: str = "skip"  # one of ON_NONFINITE
    checkpoint_every: int = 10
    keep_checkpoints: int = 2


@dataclass
class SFTConfig:
    """`zerosearch sft`: supervised fine-tuning of the simulator (model.simulator_path) into out_dir.

    One optimiser step sees `global_batch_size` sequences: each of the N ranks runs
    global_batch_size / (N · micro_batch_size) micro-batches and accumulates their gradients.
    `model.gradient_checkpointing` and `model.packed_sequences` apply as in RL.
    """

    data_path: str = ""  # our pairs JSONL or ZeroSearch instruction/input/output rows (zerosearch/rl/sft_data.py)
    eval_path: str = ""  # held-out rows; empty: the last eval_fraction of data_path (after a seeded shuffle)
    eval_fraction: float = 0.02
    balance: bool = True  # equal useful and noisy rows (the larger class subsampled)
    steps: int = 1000
    lr: float = 1e-6
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # one of LR_SCHEDULES
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    global_batch_size: int = 16
    micro_batch_size: int = 4
    max_len: int = 1024
    length_grouping: bool = True  # micro-batches of similar lengths (less padding)
    eval_every: int = 100  # 0: only at the end
    save_every: int = 100
    keep_checkpoints: int = 2
    append_eos: bool = True  # end every target with EOS (the simulator must learn to stop)


@dataclass
class CollectConfig:
    """`zerosearch collect` (a policy's sub-queries against a real engine) and `zerosearch label` (useful/noisy
    labels, balanced classes): the simulator's training pairs."""

    out_path: str = ""  # the collected rows; empty: out_dir/collected.jsonl
    max_questions: int = 0  # a seeded sample of data.train_path; 0: every question
    rollouts: int = 1  # rollouts per question, sampled at rollout.temperature
    greedy: bool = False  # greedy rollouts instead (one per question is then enough)
    batch_questions: int = 64
    label_rule: str = "cover_em"  # one of LABEL_RULES
    pairs_path: str = ""  # the labelled pairs; empty: out_dir/pairs.jsonl
    balance: bool = True  # equal useful and noisy pairs (the larger class subsampled)
    negatives: int = 0  # mined noisy pairs per useful pair (zerosearch/collect/labels.py says why)
    judge_url: str = ""  # any OpenAI-compatible server (label_rule=judge)
    judge_model: str = ""
    judge_api: str = "chat"  # one of JUDGE_APIS
    judge_api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (unset: no key sent)
    judge_prompt_path: str = ""  # empty: the prompt shipped in zerosearch/collect/judge_prompt.txt
    judge_retries: int = 3
    judge_timeout: float = 60.0
    judge_concurrency: int = 8


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
    sft: SFTConfig = field(default_factory=SFTConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)


def _section(node: Any, name: str, key: str) -> Any:
    """The sub-section `name` of `node`; `key` is the full dotted key, for the message."""
    names = [f.name for f in dataclasses.fields(node)]
    if name not in names:
        raise ValueError(f"unknown config key {key!r}; valid keys here: {', '.join(names)}")
    return getattr(node, name)


def _declared(node: Any, name: str) -> tuple[type, bool]:
    """The declared type of field `name` (`float | None` -> (float, True)) and whether it may be None."""
    hint = typing.get_type_hints(type(node))[name]
    args = typing.get_args(hint)
    if type(None) in args:
        [inner] = [a for a in args if a is not type(None)]
        return inner, True
    return hint, False


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_TRUE, _FALSE = {"true", "yes", "on"}, {"false", "no", "off"}
_NULL = {"null", "none", "~", ""}
_TYPE_NAMES = {str: "a string (quote it in YAML)", int: "int", float: "a number", bool: "true/false"}


def _coerce(value: Any, kind: type, optional: bool, *, from_cli: bool) -> Any:
    """`value` as the field's declared type, or a ValueError saying what was expected.

    A command-line value is read as text, never as YAML: `out_dir=@x`, `data.test_path=,` or
    `model.policy_path=*p` are the strings they look like, not YAML syntax errors or aliases. A value from a
    YAML file arrives already parsed and must have the field's type (an int where a float is declared is fine;
    YAML 1.1 reads `3e-5` as text, so text that is a number is accepted for a float too).
    """
    if from_cli and kind is not str:
        text = value.strip()
        if optional and text.lower() in _NULL:
            return None
        if kind is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError(f"expected true/false, got {value!r}")
        if kind is int:
            if re.fullmatch(r"[+-]?\d+", text):
                return int(text)
            raise ValueError(f"expected int, got {value!r}")
    if value is None:
        if optional:
            return None
        raise ValueError(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got null")
    if kind is str:
        if isinstance(value, str):
            return value
    elif kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true/false, got {_shown(value)}")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"expected a number{' or null' if optional else ''}, got {_shown(value)}")
    raise ValueError(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {_shown(value)}")


def apply_overrides(cfg: Any, overrides: dict[str, Any] | list[str], _prefix: str = "") -> Any:
    """Set `a.b.c=value` entries on a nested dataclass, each checked against its field's declared type.

    `overrides` is a list of `key=value` strings (the command line: values are text) or a mapping (a YAML
    file, nested or dotted, or Python values). Unknown keys raise with the valid choices; every error names
    the full key.
    """
    from_cli = not isinstance(overrides, dict)
    items = overrides.items() if not from_cli else (_split(o) for o in overrides)
    for raw_key, value in items:
        key = f"{_prefix}{raw_key}"
        node, parts = cfg, str(raw_key).split(".")
        for i, part in enumerate(parts[:-1]):
            node = _section(node, part, key)
            if not dataclasses.is_dataclass(node):
                where = _prefix + ".".join(parts[: i + 1])
                raise ValueError(f"config key {key!r}: {where!r} is a value, not a section")
        leaf = parts[-1]
        current = _section(node, leaf, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config key {key!r} is a section: it needs a mapping of its keys "
                                 f"(e.g. {key}.<name>=...), got {_shown(value)}")
            apply_overrides(current, value, f"{key}.")
            continue
        kind, optional = _declared(node, leaf)
        try:
            setattr(node, leaf, _coerce(value, kind, optional, from_cli=from_cli))
        except ValueError as exc:
            raise ValueError(f"config key {key!r}: {exc}") from None
    return cfg


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    return key.strip(), value


def _read_yaml(path: Path) -> Any:
    """The parsed file, or a one-line ValueError naming the file (and line) for anything a user can get wrong."""
    if path.is_dir():
        raise ValueError(f"config file {path} is a directory")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # safe_load also refuses !!python/... tags: no code runs from a config
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        raise ValueError(f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file (if any), then CLI overrides."""
    cfg = RunConfig()
    if path:
        data = _read_yaml(Path(path))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping at top level")
        try:
            apply_overrides(cfg, data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if overrides:
        apply_overrides(cfg, overrides)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(config_to_dict(cfg))), sort_keys=False))
