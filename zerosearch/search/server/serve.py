"""Building and running the simulator server: its limits (each stated in SECURITY.md), checked up front."""

from __future__ import annotations

import dataclasses
import logging
import socket

from zerosearch.config import ServeConfig
from zerosearch.generation.base import TextCompleter
from zerosearch.search.server.connections import is_loopback
from zerosearch.search.server.http import SimulatorHTTPServer, _V6Server
from zerosearch.search.server.request import token_counter

log = logging.getLogger(__name__)

# Defaults of every limit: the config's `serve` section, so make_server and `simulate --serve` cannot drift.
DEFAULT_LIMITS = dataclasses.asdict(ServeConfig())


def check_listen_address(host: str, port: int) -> None:
    """Raise ValueError now (before a model is loaded) if ``host:port`` cannot be listened on."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in [0, 65535], got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
            s.bind((host, port))
    except (OSError, OverflowError) as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e}") from e


def resolve_limits(limits: dict) -> dict:
    """DEFAULT_LIMITS overridden by ``limits``, each checked (ValueError naming the first bad one)."""
    unknown = set(limits) - set(DEFAULT_LIMITS)
    if unknown:
        raise ValueError(f"unknown server limits: {sorted(unknown)}")
    lim = {**DEFAULT_LIMITS, **limits}
    for name in ("max_body_bytes", "max_concurrency", "max_prompts_per_request", "max_tokens_cap",
                 "max_prompt_tokens", "max_connections", "max_batch"):  # fmt: skip
        if lim[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {lim[name]}")
    for name in ("request_timeout", "generation_timeout"):
        if not lim[name] > 0:
            raise ValueError(f"{name} must be > 0, got {lim[name]}")
    if lim["batch_window_ms"] < 0:
        raise ValueError(f"batch_window_ms must be >= 0, got {lim['batch_window_ms']}")
    return lim


def make_server(completer: TextCompleter, *, model_name: str, host: str = "127.0.0.1", port: int = 0,
                tokenizer=None, **limits) -> SimulatorHTTPServer:  # fmt: skip
    """A bound (not yet serving) server; call `serve_forever()` on it, `shutdown()` + `server_close()` to stop.

    `port=0` picks a free port (read it from `server.server_address[1]`). `limits` override DEFAULT_LIMITS.
    `tokenizer` counts prompt tokens for `max_prompt_tokens` (default: the completer's own tokenizer).
    """
    lim = resolve_limits(limits)
    if not model_name:
        raise ValueError("model_name must be non-empty")
    if not is_loopback(host):
        log.warning("binding the simulator server to %s: it is reachable from other machines and has no "
                    "authentication; expose it only on a trusted network", host)
    lim["max_connections"] = max(lim["max_connections"], lim["max_concurrency"])
    cls = _V6Server if ":" in host else SimulatorHTTPServer
    return cls((host, port), completer=completer, model_name=model_name,
               count_tokens=token_counter(completer, tokenizer), **lim)


def serve(completer: TextCompleter, *, model_name: str, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    """Serve ``completer`` until interrupted (the entry of ``zerosearch simulate --serve``)."""
    try:
        server = make_server(completer, model_name=model_name, host=host, port=port, **limits)
    except OSError as e:  # port in use, address not local, ...: a usage error, reported without a traceback
        raise ValueError(f"cannot listen on {host}:{port}: {e}") from e
    shown = f"[{host}]" if ":" in host else host
    log.info("serving simulator %r on http://%s:%d/v1 (batches of up to %d prompts; Ctrl-C to stop)", model_name,
             shown, server.server_address[1], server.scheduler.max_batch)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
