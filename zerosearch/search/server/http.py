"""The simulator behind a small OpenAI-compatible HTTP server (`/v1/completions`, `/v1/models`, `/health`).

Why: a training run on another machine (or several runs) can then share one simulator through the same
`OpenAISimulator` client that talks to vLLM/SGLang, without installing either. Only the stdlib
`http.server` is used, so serving adds no dependency.

The server is meant for a trusted network and is defensive by default (see SECURITY.md): it binds to
loopback unless told otherwise, reads at most `max_body_bytes` of a body (larger declared bodies get 413
before any of it is read), runs at most `max_concurrency` completion requests at a time (more get 503 at
once instead of queueing), validates every field it uses, caps prompts and tokens per request, never
interprets request or model text (no eval, no templates, no file paths), and sends no CORS headers.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from zerosearch.generation.base import Completion, SamplingParams, TextCompleter
from zerosearch.search.server.request import BadRequest, parse_completion_request

log = logging.getLogger(__name__)

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_header_name(value: str) -> str:
    """`127.0.0.1:8000` -> `127.0.0.1`, `[::1]:8000` -> `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class SimulatorHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the completer and the limits; one thread per connection, bounded.

    The completer (a local :class:`~zerosearch.generation.Generator`) is not safe to use from several threads
    at once, so completions take turns on it under ``model_lock``.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], *, completer: TextCompleter, model_name: str,
                 max_body_bytes: int, max_concurrency: int, max_prompts_per_request: int, max_tokens_cap: int,
                 request_timeout: float, max_connections: int):
        self.completer = completer
        self.model_lock = threading.Lock()
        self.model_name = model_name
        self.max_body_bytes = max_body_bytes
        self.max_prompts_per_request = max_prompts_per_request
        self.max_tokens_cap = max_tokens_cap
        self.request_timeout = request_timeout
        self.created = int(time.time())
        self.loopback_only = is_loopback(address[0])
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self.connections = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        # Each connection costs a thread; past `max_connections` open ones (e.g. slow clients that hold a
        # socket until request_timeout) new connections are answered 503 and closed on the accept thread.
        if not self.connections.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def handle_error(self, request, client_address) -> None:
        """A client that hung up is routine; anything else is logged with its traceback (not printed)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("connection from %s ended: %s", client_address, exc)
        else:
            log.exception("error while handling a request from %s", client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


class _V6Server(SimulatorHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: SimulatorHTTPServer
    server_version = "zerosearch-simulator"
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads

    def version_string(self) -> str:
        return self.server_version  # do not advertise the Python version

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # socket timeout: a slow client cannot hold a thread forever
        super().setup()

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    # -- responses ---------------------------------------------------------------------------------------------
    def _send_json(self, status: int, payload: dict, extra_headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error_json(self, status: int, message: str, err_type: str = "invalid_request_error",
                         param: str | None = None, extra_headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": err_type, "param": param, "code": status}},
                        extra_headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON instead of the base class's HTML page (also used for malformed request lines and headers)."""
        self.close_connection = True
        try:
            short = self.responses.get(code, ("error",))[0]
            self._send_error_json(code, message or short, err_type="http_error")
        except OSError:
            pass

    def _lingering_close(self) -> None:
        """Answer first, then drain a little of the unread body so the client sees the reply, not a reset."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            drained, deadline = 0, time.monotonic() + 2.0
            while drained < 1 << 20 and time.monotonic() < deadline:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    # -- routing ------------------------------------------------------------------------------------------------
    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _host_ok(self) -> bool:
        """On a loopback bind, refuse foreign Host headers (DNS rebinding from a browser page)."""
        if not self.server.loopback_only:
            return True
        host = self.headers.get("Host")
        return host is None or _host_header_name(host) in _LOOPBACK_NAMES

    def do_GET(self) -> None:
        if not self._host_ok():
            return self._send_error_json(403, "Host header not allowed", "forbidden")
        route = self._route()
        if route == "/health":
            return self._send_json(200, {"status": "ok"})
        if route == "/v1/models":
            card = {"id": self.server.model_name, "object": "model", "created": self.server.created,
                    "owned_by": "zerosearch"}
            return self._send_json(200, {"object": "list", "data": [card]})
        if route == "/v1/completions":
            return self._send_error_json(405, "use POST for /v1/completions", extra_headers={"Allow": "POST"})
        return self._send_error_json(404, f"no route {route!r}", "not_found_error")

    def do_POST(self) -> None:
        if not self._host_ok():
            return self._send_error_json(403, "Host header not allowed", "forbidden")
        route = self._route()
        if route != "/v1/completions":
            return self._send_error_json(404, f"no route {route!r}", "not_found_error")
        req = self._parse_completion()
        if req is None:
            return
        # The slot is taken only once the body is in, so slow uploads (bounded by max_connections and the
        # read deadline) cannot starve generation; a full server answers 503 at once instead of queueing.
        if not self.server.slots.acquire(blocking=False):
            return self._send_error_json(503, "server busy: too many concurrent requests, retry later",
                                         "server_busy", extra_headers={"Retry-After": "1"})
        try:
            completions = self._generate(req)
        finally:
            self.server.slots.release()  # before replying, so a client that got its answer finds the slot free
        if completions is not None:
            self._reply(req, completions)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise BadRequest("chunked request bodies are not supported; send Content-Length", status=411)
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest("Content-Length is required", status=411)
        try:
            n = int(length)
        except ValueError:
            raise BadRequest("invalid Content-Length") from None
        if n < 0:
            raise BadRequest("invalid Content-Length")
        if n > self.server.max_body_bytes:
            raise BadRequest(f"request body of {n} bytes exceeds the limit of {self.server.max_body_bytes}",
                             status=413)
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            # Requiring JSON also means a browser page cannot send this cross-site without a CORS preflight,
            # which this server never grants.
            raise BadRequest("Content-Type must be application/json", status=415)
        # One deadline for the whole body, not just per read: a client trickling bytes is cut off too.
        deadline = time.monotonic() + self.server.request_timeout
        chunks, got = [], 0
        while got < n:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = self.rfile.read1(min(65536, n - got))
            if not chunk:
                raise BadRequest("request body shorter than Content-Length")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _parse_completion(self) -> dict | None:
        """The validated request, or None once an error reply has been sent."""
        srv = self.server
        try:
            raw = self._read_body()
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as e:
                raise BadRequest(f"invalid JSON: {e}") from None
            return parse_completion_request(body, model_name=srv.model_name, max_prompts=srv.max_prompts_per_request,
                                            max_tokens_cap=srv.max_tokens_cap)
        except BadRequest as e:
            self._send_error_json(e.status, str(e), e.err_type, e.param)
            if e.status in (411, 413, 415):
                self._lingering_close()
            return None
        except TimeoutError:
            self.close_connection = True
            try:
                self._send_error_json(408, "timed out reading the request body", "timeout")
            except OSError:
                pass
            return None

    def _generate(self, req: dict) -> list[Completion] | None:
        """One completion per prompt, or None once a 500 has been sent."""
        srv = self.server
        temperature = req["temperature"]
        sampling = (SamplingParams(greedy=True) if temperature <= 0.0 else
                    SamplingParams(temperature=temperature, top_p=req["top_p"]))
        try:
            with srv.model_lock:
                out = list(srv.completer.complete(req["prompts"], max_new_tokens=req["max_tokens"], sampling=sampling,
                                                  stop=req["stop"]))
            if len(out) != len(req["prompts"]) or not all(isinstance(c, Completion) for c in out):
                raise RuntimeError(f"the completer returned {len(out)} items for {len(req['prompts'])} prompts")
        except Exception:
            log.exception("generation failed")
            self._send_error_json(500, "generation failed", "server_error")
            return None
        return out

    def _reply(self, req: dict, completions: list[Completion]) -> None:
        choices = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                   for i, c in enumerate(completions)]
        prompt_tokens = sum(c.prompt_tokens for c in completions)
        completion_tokens = sum(c.completion_tokens for c in completions)
        self._send_json(200, {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.server.model_name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


def make_server(
    completer: TextCompleter,
    *,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    max_body_bytes: int = 1_000_000,
    max_concurrency: int = 4,
    max_prompts_per_request: int = 256,
    max_tokens_cap: int = 2048,
    request_timeout: float = 30.0,
    max_connections: int = 64,
) -> SimulatorHTTPServer:
    """A bound (not yet serving) server; call `serve_forever()` on it, `shutdown()` + `server_close()` to stop.

    `port=0` picks a free port (read it from `server.server_address[1]`). `request_timeout` is the socket
    timeout for reading a request and writing the reply; generation itself is bounded by `max_tokens_cap`
    and `max_prompts_per_request`, not interrupted.
    """
    if not model_name:
        raise ValueError("model_name must be non-empty")
    for name, value in (("max_body_bytes", max_body_bytes), ("max_concurrency", max_concurrency),
                        ("max_prompts_per_request", max_prompts_per_request), ("max_tokens_cap", max_tokens_cap),
                        ("max_connections", max_connections)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1")
    if request_timeout <= 0:
        raise ValueError("request_timeout must be > 0")
    if not is_loopback(host):
        log.warning("binding the simulator server to %s: it is reachable from other machines and has no "
                    "authentication; expose it only on a trusted network", host)
    cls = _V6Server if ":" in host else SimulatorHTTPServer
    return cls((host, port), completer=completer, model_name=model_name, max_body_bytes=max_body_bytes,
               max_concurrency=max_concurrency, max_prompts_per_request=max_prompts_per_request,
               max_tokens_cap=max_tokens_cap, request_timeout=request_timeout,
               max_connections=max(max_connections, max_concurrency))


def serve(completer: TextCompleter, *, model_name: str, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    """Serve ``completer`` until interrupted (the entry of ``zerosearch simulate --serve``)."""
    try:
        server = make_server(completer, model_name=model_name, host=host, port=port, **limits)
    except OSError as e:  # port in use, address not local, ...: a usage error, reported without a traceback
        raise ValueError(f"cannot listen on {host}:{port}: {e}") from e
    shown = f"[{host}]" if ":" in host else host
    log.info("serving simulator %r on http://%s:%d/v1 (Ctrl-C to stop)", model_name, shown, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
