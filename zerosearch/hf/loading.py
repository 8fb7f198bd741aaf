"""Hugging Face checkpoints from local paths: tokenizer, causal LM (dtype, attention implementation), tags.

Everything is read from disk (never a hub): the toy pipeline points the paths at its own assets, a real run at
Hugging Face checkpoints on disk.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from zerosearch.config import ATTN_IMPLEMENTATIONS, DTYPES
from zerosearch.hf.xformers_attention import NAME as XFORMERS
from zerosearch.hf.xformers_attention import register_xformers_attention, xformers_installed
from zerosearch.rollout.protocol import TAGS

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES if name != "auto"}


def resolve_dtypes(dtype: str, device: str | torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(weight dtype of a trained model, compute dtype) for `model.dtype` on `device`.

    ``auto`` is mixed precision on CUDA, as FSDP2 does it: fp32 master weights (at the paper's lr of 1e-6 a bf16
    weight would not move: the update is below bf16's resolution) and bf16 matmuls (tensor cores, half the
    activation memory, no exact-fp32 kernel variants); plain fp32 on CPU, which has no fast 16-bit GEMM.
    """
    if dtype == "auto":
        return (torch.float32, torch.bfloat16) if torch.device(device).type == "cuda" else (torch.float32,) * 2
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"model.dtype must be one of {list(DTYPES)}, not {dtype!r}")
    return TORCH_DTYPES[dtype], TORCH_DTYPES[dtype]


def existing_path(path: str, what: str) -> Path:
    if not path:
        raise ValueError(f"{what} is not set in the config")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what}: {p} does not exist (models and data are read from local paths only)")
    return p


def load_tokenizer(path: str) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast.from_pretrained(str(existing_path(path, "tokenizer path")))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


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
        half_on_cuda = on_cuda and resolve_dtypes(dtype, device)[1] in (torch.bfloat16, torch.float16)
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


def load_causal_lm(path: str, dtype: str = "auto", device: str = "cpu", attn_implementation: str = "auto", *,
                   trainable: bool = True):
    """A causal LM stored in the weight dtype of `dtype` if it will be trained, else in its compute dtype."""
    weight_dtype, compute_dtype = resolve_dtypes(dtype, device)
    attn = resolve_attn_implementation(attn_implementation, dtype, device)
    if attn == XFORMERS:
        register_xformers_attention()
    model = AutoModelForCausalLM.from_pretrained(
        str(existing_path(path, "model path")), dtype=weight_dtype if trainable else compute_dtype,
        attn_implementation=attn,
    )
    return model.to(device)


def ensure_tag_tokens(tokenizer, model) -> list[str]:
    """Make each protocol tag one token (the rollout stops on and parses tag ids, never re-tokenised text).

    Real tokenizers (Qwen2.5, Llama-3) split `<search>` into pieces; the missing tags are added as
    tokens and the embeddings grown, new rows starting at the mean embedding. Returns the added tags.
    """
    missing = [t for t in TAGS if len(tokenizer.encode(t, add_special_tokens=False)) != 1]
    if not missing:
        return []
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return missing
