"""A scriptable local JSON-over-HTTP server: the stand-in every HTTP search backend's tests talk to.

Each POST is answered by the next entry of `modes` (the last one repeats): "hang" never answers, a number
("500", "401") is that HTTP error, "garbage" is a non-JSON 200, anything else is handed to the subclass's
`respond`. Every request is logged (path, decoded body, lower-cased headers — HTTP header names are
case-insensitive); `delays` maps a body's "q" to seconds to wait first (`delay` for any other body), and
`max_inflight` is the most requests seen at once.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeJsonServer:
    route = "/"

    def __init__(self) -> None:
        self.modes: list[str] = ["ok"]
        self.requests: list[dict] = []
        self.delays: dict[str, float] = {}
        self.delay = 0.0
        self.hang_s = 1.0
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body, "headers": headers})
                    mode = fake.modes.pop(0) if len(fake.modes) > 1 else fake.modes[0]
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                counted = True

                def answered() -> None:
                    # Stop counting before the answer goes out: once the client has it, it may send its next
                    # request before this thread runs again, and that must not look like one extra in flight.
                    nonlocal counted
                    if counted:
                        with fake._lock:
                            fake.inflight -= 1
                        counted = False

                try:
                    query = body.get("q") if isinstance(body, dict) else None
                    time.sleep(fake.delays.get(query, fake.delay) if isinstance(query, str) else fake.delay)
                    if mode == "hang":
                        time.sleep(fake.hang_s)
                        return
                    if mode.isdigit():
                        answered()
                        self.send_error(int(mode), "nope")
                        return
                    payload = b"<html>not json" if mode == "garbage" else fake.respond(body, mode, headers)
                    answered()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timeout test): nothing to tell it
                    pass
                finally:
                    answered()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.route}"

    def respond(self, body: dict, mode: str, headers: dict[str, str]) -> bytes:
        """The 200 body for `mode`; subclasses speak their server's wire format."""
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
