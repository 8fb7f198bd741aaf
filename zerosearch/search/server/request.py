"""Validation of `/v1/completions` request bodies: what the server accepts, normalised, or a 4xx error."""

from __future__ import annotations

from typing import Any

__all__ = ["BadRequest", "parse_completion_request"]


class BadRequest(Exception):
    """A client error with an HTTP status and an OpenAI-style error type; its message goes to the client."""

    def __init__(self, message: str, status: int = 400, err_type: str = "invalid_request_error",
                 param: str | None = None):
        super().__init__(message)
        self.status = status
        self.err_type = err_type
        self.param = param


_UNSUPPORTED_TRUTHY = ("stream", "echo", "logprobs", "suffix")


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


def parse_completion_request(body: Any, *, model_name: str, max_prompts: int, max_tokens_cap: int) -> dict:
    """Check a decoded `/v1/completions` body; return the normalised fields or raise BadRequest.

    Unknown fields are ignored (clients send extras such as `user`), but fields whose meaning this server
    cannot honour (streaming, echo, logprobs, n > 1) are refused rather than silently dropped.
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
    prompt = body["prompt"]
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    else:
        raise BadRequest("'prompt' must be a string or a non-empty list of strings (token ids are not supported)",
                         param="prompt")
    if len(prompts) > max_prompts:
        raise BadRequest(f"at most {max_prompts} prompts per request, got {len(prompts)}", param="prompt")

    max_tokens = body.get("max_tokens", 16)
    if max_tokens is None:
        max_tokens = 16
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise BadRequest("'max_tokens' must be an integer", param="max_tokens")
    if not 1 <= max_tokens <= max_tokens_cap:
        raise BadRequest(f"'max_tokens' must be in [1, {max_tokens_cap}], got {max_tokens}", param="max_tokens")

    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)

    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        raise BadRequest("only n=1 is supported", param="n")
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or best_of != 1):
        raise BadRequest("only best_of=1 is supported", param="best_of")
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
            "stop": stops}
