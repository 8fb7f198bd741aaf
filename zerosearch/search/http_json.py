"""POST JSON with a timeout, bounded retries and exponential backoff: the transport of every HTTP backend.

A flaky server (hangs, 5xx, garbage) must cost a few rows a fallback result, never a run, and
must never be retried forever. `post` returns the last error instead of raising it so callers can turn it
into fallback results; the attempt/retry/failure counters are thread-safe.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class RetryableError(RuntimeError):
    """A failure worth another attempt (timeout, connection error, 5xx/429, unparseable body)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when there was one


class ServerError(RuntimeError):
    """A failure that another attempt will not fix (e.g. 4xx: bad model name, bad request)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JsonPoster:
    """Bounded-retry JSON POSTs to one URL; `parse` turns the raw body into a result or raises."""

    def __init__(self, url: str, *, timeout: float, max_retries: int, backoff: float,
                 headers: dict[str, str] | None = None) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.url = url
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self._lock = threading.Lock()
        self.counts = {"http_attempts": 0, "http_retries": 0, "http_failures": 0}

    def _bump(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def _post_once(self, payload: dict[str, Any], parse: Callable[[bytes], T]) -> T:
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=self.headers,
                                     method="POST")
        self._bump("http_attempts")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            e.close()
            if e.code >= 500 or e.code == 429:
                raise RetryableError(f"HTTP {e.code}", e.code) from e
            raise ServerError(f"HTTP {e.code}: {e.reason}", e.code) from e
        except (OSError, http.client.HTTPException) as e:  # URLError, socket timeouts and resets are OSErrors
            raise RetryableError(f"{type(e).__name__}: {e}") from e
        try:
            return parse(raw)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RetryableError(f"unparseable response ({e}): {raw[:200]!r}") from e

    def post(self, payload: dict[str, Any], parse: Callable[[bytes], T]) -> T | Exception:
        """At most 1 + max_retries attempts; the last error is returned (not raised) on failure."""
        error: Exception = RuntimeError("no attempt made")
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(payload, parse)
            except RetryableError as e:
                error = e
            except ServerError as e:  # a 4xx will not get better by asking again
                error = e
                break
            if attempt < self.max_retries:
                self._bump("http_retries")
                time.sleep(self.backoff * (2**attempt))
        self._bump("http_failures")
        return error
