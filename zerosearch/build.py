"""Build the pieces of a run from its config: tokenizer, models, search backend, rollout runner.

Everything is read from local paths (never a hub): the toy pipeline fills the paths with its own assets,
a real run points them at Hugging Face checkpoints and Search-R1-layout data on disk.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from zerosearch.config import RunConfig
from zerosearch.engine.sampler import EngineSampler, engine_generate_texts
from zerosearch.generation import generate_texts
from zerosearch.rollout import RolloutRunner, RolloutSettings
from zerosearch.sampler import HFSampler
from zerosearch.search import (
    BM25Search,
    DenseRetrieverSearch,
    NoiseCurriculum,
    OpenAISimulator,
    RetrievalServerSearch,
    SimulatorSearch,
    WebSearch,
)
from zerosearch.xformers_attention import NAME as XFORMERS
from zerosearch.xformers_attention import register_xformers_attention, xformers_installed

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _existing_dir(path: str, what: str) -> Path:
    if not path:
        raise ValueError(f"{what} is not set in the config")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what}: {p} does not exist (models and data are read from local paths only)")
    return p


def load_tokenizer(path: str) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast.from_pretrained(str(_existing_dir(path, "tokenizer path")))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2", "xformers")


def _flash_attn_installed() -> bool:
    """Whether flash_attn can be imported, found without importing it (its import is slow and may touch CUDA)."""
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(requested: str, dtype: str, device: str | torch.device) -> str:
    """The `attn_implementation` to hand transformers for a model loaded with this dtype on this device.

    "auto" picks a varlen-capable kernel only where it can actually run (installed, CUDA, half precision):
    FlashAttention-2, else xFormers, else SDPA, so one config works on a laptop and on a GPU node. An
    explicit choice is honoured, except that asking for a package that is not installed fails here with a
    clear message instead of deep inside transformers.
    """
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation must be one of {list(ATTN_IMPLEMENTATIONS)}, not {requested!r}")
    if requested == "auto":
        on_cuda = torch.device(device).type == "cuda"
        half_on_cuda = on_cuda and dtype in ("bfloat16", "float16")
        if half_on_cuda and _flash_attn_installed():
            return "flash_attention_2"
        return "xformers" if half_on_cuda and xformers_installed() else "sdpa"
    for name, package, installed in (("flash_attention_2", "flash_attn", _flash_attn_installed),
                                     ("xformers", "xformers", xformers_installed)):
        if requested == name and not installed():
            raise ValueError(
                f"model.attn_implementation={name} needs the {package} package, which is not installed; "
                "install it or use 'auto', 'sdpa' or 'eager'"
            )
    return requested


def load_causal_lm(path: str, dtype: str = "float32", device: str = "cpu", attn_implementation: str = "auto"):
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    attn = resolve_attn_implementation(attn_implementation, dtype, device)
    if attn == XFORMERS:
        register_xformers_attention()
    model = AutoModelForCausalLM.from_pretrained(
        str(_existing_dir(path, "model path")), dtype=_DTYPES[dtype], attn_implementation=attn
    )
    return model.to(device)


def ensure_tag_tokens(tokenizer, model) -> list[str]:
    """Make each protocol tag one token (the rollout stops on and parses tag ids, DESIGN §2.4).

    Real tokenizers (Qwen2.5, Llama-3) split `<search>` into pieces; the missing tags are added as
    tokens and the embeddings grown, new rows starting at the mean embedding. Returns the added tags.
    """
    from zerosearch.prompts import TAGS

    missing = [t for t in TAGS if len(tokenizer.encode(t, add_special_tokens=False)) != 1]
    if not missing:
        return []
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return missing


def load_policy(cfg: RunConfig, device: str | None = None):
    """Tokenizer and policy from their paths, with the protocol tags guaranteed to be single tokens."""
    tok = load_tokenizer(cfg.model.tokenizer_path or cfg.model.policy_path)
    policy = load_causal_lm(cfg.model.policy_path, cfg.model.dtype, device or cfg.device,
                            attn_implementation=cfg.model.attn_implementation)
    ensure_tag_tokens(tok, policy)
    return tok, policy


def build_curriculum(cfg: RunConfig) -> NoiseCurriculum:
    c = cfg.curriculum
    return NoiseCurriculum(cfg.trainer.steps, c.p_start, c.p_end, c.base)


def build_search(cfg: RunConfig, *, curriculum: NoiseCurriculum | None, simulator=None, sim_tokenizer=None,
                 cache_size: int = 0):
    """The training-time search backend named by `simulator.backend`."""
    s = cfg.simulator
    if s.backend == "bm25":
        return BM25Search.from_jsonl(_existing_dir(cfg.data.corpus_path, "data.corpus_path"), top_k=s.top_k)
    if s.backend == "openai":
        if not s.base_url:
            raise ValueError("simulator.backend=openai needs simulator.base_url (e.g. http://localhost:8000/v1)")
        return OpenAISimulator(s.base_url, s.model, timeout=s.timeout, max_retries=s.max_retries,
                               concurrency=s.concurrency, curriculum=curriculum, seed=cfg.seed, top_k=s.top_k,
                               temperature=s.temperature, max_tokens=s.max_new_tokens,
                               answer_in_noisy=s.answer_in_noisy)
    if s.backend == "retriever":
        if not s.retriever_url:
            raise ValueError("simulator.backend=retriever needs simulator.retriever_url "
                             "(e.g. http://127.0.0.1:8000/retrieve)")
        return RetrievalServerSearch(s.retriever_url, top_k=s.top_k, timeout=s.timeout, max_retries=s.max_retries)
    if s.backend == "web":
        return WebSearch(s.web_url, api_key_env=s.web_api_key_env, top_k=s.top_k, timeout=s.timeout,
                         max_retries=s.max_retries, concurrency=s.concurrency)
    if s.backend == "dense":
        return DenseRetrieverSearch.from_jsonl(
            _existing_dir(cfg.data.corpus_path, "data.corpus_path"),
            _existing_dir(s.dense_encoder_path, "simulator.dense_encoder_path"),
            top_k=s.top_k,
            device=cfg.device,
            index_cache=s.dense_index_cache or None,
        )
    if s.backend == "simulator":
        if simulator is None:
            simulator = load_causal_lm(cfg.model.simulator_path, cfg.model.dtype, cfg.device,
                                       attn_implementation=cfg.model.attn_implementation)
            sim_tokenizer = load_tokenizer(cfg.model.tokenizer_path or cfg.model.simulator_path)
        generate = _generator(s.engine)

        def gen(prompts: list[str]) -> list[str]:
            return generate(simulator, sim_tokenizer, prompts, max_new_tokens=s.max_new_tokens,
                            temperature=s.temperature)

        return SimulatorSearch(gen, curriculum, top_k=s.top_k, seed=cfg.seed, answer_in_noisy=s.answer_in_noisy,
                               cache_size=cache_size)
    raise ValueError(f"simulator.backend must be simulator, bm25, openai, retriever, web or dense, not {s.backend!r}")


def _generator(name: str):
    if name not in ("engine", "hf"):
        raise ValueError(f"engine must be 'engine' or 'hf', not {name!r}")
    return engine_generate_texts if name == "engine" else generate_texts


def build_runner(cfg: RunConfig, policy, tokenizer, search, *, greedy: bool = False) -> RolloutRunner:
    r = cfg.rollout
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    _generator(r.engine)  # validates the name
    sampler_cls = EngineSampler if r.engine == "engine" else HFSampler
    sampler = sampler_cls(policy, pad, temperature=r.temperature, top_p=r.top_p, greedy=greedy)
    settings = RolloutSettings(max_turns=r.max_turns, max_new_tokens=r.max_new_tokens, max_context=r.max_context,
                               max_query_chars=r.max_query_chars)
    return RolloutRunner(tokenizer, sampler, search, settings)
