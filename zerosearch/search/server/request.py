"""Validation of `/v1/completions` request bodies: what the server accepts, normalised, or a 4xx error."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from zerosearch.generation.base import TextCompleter

__all__ = ["BadRequest", "parse_completion_request", "token_counter"]

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A client error with an HTTP status and an OpenAI-style error type; its message goes to the client."""

    def __init__(self, message: str, status: int = 400, err_type: str = "invalid_request_error",
                 param: str | None = None):
        super().__init__(message)
        self.status = status
        self.err_type = err_type
        self.param = param


_UNSUPPORTED_TRUTHY = ("stream", "echo", "logprobs", "suffix")
MAX_N = 16  # samples per prompt


def _number(body: dict, key: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"'{key}' must be a number", param=key)
    value = float(value)
    if not (low < value if low_open else low <= value) or value > high:
        bracket = "(" if low_open else "["
        raise BadRequest(f"'{key}' must be in {bracket}{low}, {high}], got {value}", param=key)
    return value


def _prompts(body: dict) -> list[str]:
    prompt = body["prompt"]
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    else:
        raise BadRequest("'prompt' must be a string or a non-empty list of strings (token ids are not supported)",
                         param="prompt")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise BadRequest(f"prompt {empty[0]} is empty or only whitespace", param="prompt")
    return prompts


def _integer(body: dict, key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{key}' must be an integer", param=key)
    if not low <= value <= high:
        raise BadRequest(f"'{key}' must be in [{low}, {high}], got {value}", param=key)
    return value


def parse_completion_request(body: Any, *, model_name: str, max_prompts: int, max_tokens_cap: int,
                             max_n: int = MAX_N) -> dict:  # fmt: skip
    """Check a decoded `/v1/completions` body; return the normalised fields or raise BadRequest.

    Unknown fields are ignored (clients send extras such as `user`), but fields whose meaning this server
    cannot honour (streaming, echo, logprobs, suffix, best_of other than n) are refused rather than silently
    dropped. `n` samples per prompt are returned prompt by prompt, as vLLM and SGLang order them (choice
    `i * n + j` is sample `j` of prompt `i`); `max_prompts` bounds prompts times `n`.
    """
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string", param="model")
    if model and model != model_name:
        raise BadRequest(f"model {model!r} is not served here (this server serves {model_name!r})", status=404,
                         err_type="not_found_error", param="model")

    if "prompt" not in body:
        raise BadRequest("'prompt' is required", param="prompt")
    prompts = _prompts(body)
    max_tokens = _integer(body, "max_tokens", 16, 1, max_tokens_cap)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    n = _integer(body, "n", 1, 1, max_n)
    if len(prompts) * n > max_prompts:
        raise BadRequest(f"at most {max_prompts} prompts (times n) per request, got {len(prompts)} x {n}",
                         param="prompt")
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or best_of != n):
        raise BadRequest("best_of must equal n (no ranking of samples is done)", param="best_of")
    seed = _integer(body, "seed", None, 0, 2**63 - 1)
    for key in _UNSUPPORTED_TRUTHY:
        if body.get(key):
            raise BadRequest(f"'{key}' is not supported by this server", param=key)

    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise BadRequest("'stop' must be a string or a list of at most 4 strings", param="stop")
    stops = [s for s in stops if s]

    return {"prompts": prompts, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
            "stop": stops, "n": n, "seed": seed}


def token_counter(completer: TextCompleter, tokenizer=None) -> Callable[[list[str]], list[int]]:
    """Prompt lengths as the completer will see them: its tokenizer's ids; without one, UTF-8 bytes (an upper
    bound for byte-level tokenizers). Handler threads count on a copy of the tokenizer, so they never share
    one with the generation worker (a fast tokenizer may refuse concurrent use: "Already borrowed")."""
    tok = tokenizer if tokenizer is not None else getattr(completer, "tokenizer", None)
    if tok is None:
        return lambda prompts: [len(p.encode()) for p in prompts]
    try:
        tok = copy.deepcopy(tok)
    except Exception:  # a tokenizer that cannot be copied is shared as it is
        log.debug("could not copy the tokenizer; counting prompt tokens with the generator's own")
    return lambda prompts: [len(ids) for ids in tok(prompts)["input_ids"]]
