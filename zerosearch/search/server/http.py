"""The simulator behind a small OpenAI-compatible HTTP server (`/v1/completions`, `/v1/models`, `/health`).

Why: a training run on another machine (or several runs) can then share one simulator through the same
`OpenAISimulator` client that talks to vLLM/SGLang, without installing either. Requests go through a
:class:`~zerosearch.generation.BatchScheduler`: concurrent requests are completed together as one engine batch.

Why the standard library and not an ASGI stack (uvicorn + starlette/FastAPI, as vLLM and SGLang use): the
guarantees this server must give are about *reading* requests — one deadline for request line, headers and
body, and a connection cap that slow clients cannot fill — and about bounded queueing in front of one
generation worker. uvicorn has no deadline covering request transmission (its keep-alive timeout is reset by
every received byte and ASGI middleware only runs once a request is parsed), so it would need the same
protocol-level work as here, plus a dependency; generation is one worker thread driving the engine, which
async I/O does not speed up; and a handful of trainer clients fit thread-per-connection, whose thread count
the connection cap bounds. `connections.py` gives the read guarantees with the standard library.

The server is meant for a trusted network and is defensive by default (see SECURITY.md): it binds to
loopback unless told otherwise, reads at most `max_body_bytes` of a body (larger declared bodies get 413
before any of it is read), must receive a whole request within `request_timeout`, admits at most
`max_concurrency` completion requests (queued or generating; more get 503 at once), refuses prompts over
`max_prompt_tokens` before queueing, answers 504 when generation exceeds `generation_timeout`, validates
every field it uses, never interprets request or model text, and sends no CORS headers.
"""

from __future__ import annotations

import io
import json
import logging
import select
import socket
import sys
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from zerosearch.generation.base import Completion, SamplingParams, TextCompleter
from zerosearch.generation.scheduler import BatchScheduler, QueueFull, Ticket
from zerosearch.search.server.connections import (
    LOOPBACK_NAMES,
    ConnectionGuard,
    ConnState,
    DeadlineReader,
    host_header_name,
    is_loopback,
)
from zerosearch.search.server.request import BadRequest, parse_completion_request

log = logging.getLogger(__name__)

_POLL_S = 0.25  # how often a request waiting for generation checks whether its client hung up


class SimulatorHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the scheduler and the limits; one thread per connection, bounded."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], *, completer: TextCompleter, model_name: str,
                 max_body_bytes: int, max_concurrency: int, max_prompts_per_request: int, max_tokens_cap: int,
                 max_prompt_tokens: int, request_timeout: float, generation_timeout: float, max_connections: int,
                 max_batch: int, batch_window_ms: float, count_tokens: Callable[[list[str]], list[int]]):  # fmt: skip
        self.completer = completer
        self.model_name = model_name
        self.max_body_bytes = max_body_bytes
        self.max_prompts_per_request = max_prompts_per_request
        self.max_tokens_cap = max_tokens_cap
        self.max_prompt_tokens = max_prompt_tokens
        self.request_timeout = request_timeout
        self.generation_timeout = generation_timeout
        self.count_tokens = count_tokens
        self.created = int(time.time())
        self.loopback_only = is_loopback(address[0])
        self.guard = ConnectionGuard(max_connections, read_timeout=request_timeout)
        self.request_queue_size = max_connections  # listen backlog: a burst of clients must not have SYNs dropped
        super().__init__(address, _Handler)  # binds first: a bad address fails before the worker starts
        self.scheduler = BatchScheduler(completer, max_batch=max_batch, batch_window=batch_window_ms / 1000,
                                        max_pending=max_concurrency)

    def process_request(self, request, client_address):
        # Each connection costs a thread; at the cap the longest slow reader is evicted, and when every
        # connection is doing real work the new one is answered 503 and closed on the accept thread.
        if self.guard.admit(request) is None:
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
            self.guard.release(request)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.guard.release(request)

    def handle_error(self, request, client_address) -> None:
        """A client that hung up is routine; anything else is logged with its traceback (not printed)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("connection from %s ended: %s", client_address, exc)
        else:
            log.exception("error while handling a request from %s", client_address)

    def health(self) -> tuple[int, dict]:
        """503 "stuck" when the worker is dead or one batch has run past the generation deadline; otherwise 200,
        "busy" while every admission slot is taken, else "ok"; with the queue's numbers."""
        st = self.scheduler.stats()
        if not st["worker_alive"] or st["running_for_s"] > self.generation_timeout:
            status = "stuck"
        else:
            status = "busy" if st["admitted"] >= st["max_pending"] else "ok"
        body = {"status": status, **{k: st[k] for k in ("queued_requests", "queued_prompts", "running_prompts",
                                                         "running_for_s", "admitted", "max_pending", "batches",
                                                         "batched_prompts", "mean_batch_prompts", "requests_done",
                                                         "mean_queue_wait_s")},
                **self.guard.stats()}  # fmt: skip
        return (503 if status == "stuck" else 200), body

    def server_close(self) -> None:
        super().server_close()
        self.scheduler.close()


class _V6Server(SimulatorHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: SimulatorHTTPServer
    server_version = "zerosearch-simulator"
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads
    disable_nagle_algorithm = True  # headers and body are separate writes; do not wait for a delayed ACK

    def version_string(self) -> str:
        return self.server_version  # do not advertise the Python version

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # socket timeout for writing the reply
        super().setup()
        self.rfile.close()  # replaced by a reader bounded by the whole request's deadline
        state = self.server.guard.state(self.request) or ConnState(self.request, 0.0)
        self.conn_state = state
        self.rfile = io.BufferedReader(DeadlineReader(state))

    def _request_in(self) -> None:
        """The whole request has arrived: stop the read deadline, become non-evictable."""
        self.server.guard.request_read(self.conn_state)
        self.connection.settimeout(self.server.request_timeout)

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
        return host is None or host_header_name(host) in LOOPBACK_NAMES

    def do_GET(self) -> None:
        self._request_in()
        if not self._host_ok():
            return self._send_error_json(403, "Host header not allowed", "forbidden")
        route = self._route()
        if route == "/health":
            return self._send_json(*self.server.health())
        if route == "/v1/models":
            card = {"id": self.server.model_name, "object": "model", "created": self.server.created,
                    "owned_by": "zerosearch", "root": self.server.model_name}
            return self._send_json(200, {"object": "list", "data": [card]})
        if route == "/v1/completions":
            return self._send_error_json(405, "use POST for /v1/completions", extra_headers={"Allow": "POST"})
        return self._send_error_json(404, f"no route {route!r}", "not_found_error")

    def do_POST(self) -> None:
        if not self._host_ok():
            self._request_in()
            return self._send_error_json(403, "Host header not allowed", "forbidden")
        route = self._route()
        if route != "/v1/completions":
            self._request_in()
            return self._send_error_json(404, f"no route {route!r}", "not_found_error")
        req = self._parse_completion()
        if req is None:
            return
        ticket = self._submit(req)
        if ticket is None:
            return
        completions = self._await(ticket)
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
        chunks, got = [], 0  # every read is bounded by the request's deadline (DeadlineReader)
        while got < n:
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
            try:
                raw = self._read_body()
            finally:
                self._request_in()
            try:
                body = json.loads(raw)
            except RecursionError:
                raise BadRequest("invalid JSON: nested too deeply") from None
            except (UnicodeDecodeError, ValueError) as e:
                raise BadRequest(f"invalid JSON: {e}") from None
            req = parse_completion_request(body, model_name=srv.model_name, max_prompts=srv.max_prompts_per_request,
                                           max_tokens_cap=srv.max_tokens_cap)
            lengths = srv.count_tokens(req["prompts"])
            over = next(((i, k) for i, k in enumerate(lengths) if k > srv.max_prompt_tokens), None)
            if over is not None:
                raise BadRequest(f"prompt {over[0]} has {over[1]} tokens, more than max_prompt_tokens="
                                 f"{srv.max_prompt_tokens}", param="prompt")
            return req
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

    def _submit(self, req: dict) -> Ticket | None:
        temperature = req["temperature"]
        sampling = (SamplingParams(greedy=True) if temperature <= 0.0 else
                    SamplingParams(temperature=temperature, top_p=req["top_p"]))
        n = req["n"]
        prompts = [p for p in req["prompts"] for _ in range(n)]  # choice i * n + j = sample j of prompt i
        try:
            return self.server.scheduler.submit(prompts, max_new_tokens=req["max_tokens"], sampling=sampling,
                                                stop=req["stop"], seed=req["seed"])
        except QueueFull:
            self._send_error_json(503, "server busy: too many queued requests, retry later", "server_busy",
                                  extra_headers={"Retry-After": "1"})
            return None

    def _client_gone(self) -> bool:
        """The client closed its side (it gave up): nothing is left to answer."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _await(self, ticket: Ticket) -> list[Completion] | None:
        """The completions, or None once a 504/500 has been sent or the client has left."""
        sched = self.server.scheduler
        end = time.monotonic() + self.server.generation_timeout
        while not ticket.done.is_set() and time.monotonic() < end:
            if not ticket.done.wait(min(_POLL_S, max(0.0, end - time.monotonic()))) and self._client_gone():
                sched.cancel(ticket)
                log.debug("client left before its completion was ready")
                return None
        try:
            return sched.wait(ticket, 0)
        except TimeoutError:
            self._send_error_json(504, f"generation did not finish within {self.server.generation_timeout:g} s; "
                                  "retry later", "timeout", extra_headers={"Retry-After": "1"})
        except Exception:
            log.exception("generation failed")
            self._send_error_json(500, "generation failed", "server_error")
        return None

    def _reply(self, req: dict, completions: list[Completion]) -> None:
        n = req["n"]
        choices = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                   for i, c in enumerate(completions)]
        prompt_tokens = sum(c.prompt_tokens for c in completions[::n])  # each prompt counted once, as vLLM does
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
