"""Bounded connections for the thread-per-connection server: a whole-request read deadline and a cap.

Why: the standard library's per-read socket timeout restarts on every byte, so a client that sends a header
byte every few seconds (slowloris) holds a thread forever, and a few dozen such clients hold every
connection slot. Two guarantees close that:

* :class:`DeadlineReader` is the handler's ``rfile``: every read is bounded by what is left of one deadline
  for the request line, the headers and the body together; past it the read raises ``TimeoutError``.
* :class:`ConnectionGuard` caps open connections; at the cap, a new connection evicts the connection that has
  been *reading its request* the longest instead of being refused. A well-behaved client sends its request in
  milliseconds and is then no longer a reader, so it could only be evicted if ``cap`` newer connections
  arrived within those milliseconds; slow readers are the ones that go. Connections whose request is in
  (waiting for generation or being answered) are never evicted; when every connection is one of those, a new
  connection is refused.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_header_name(value: str) -> str:
    """`127.0.0.1:8000` -> `127.0.0.1`, `[::1]:8000` -> `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class ConnState:
    """What the guard knows about one open connection."""

    __slots__ = ("sock", "opened", "deadline", "reading", "evicted")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.opened = time.monotonic()
        self.deadline = deadline
        self.reading = True
        self.evicted = False


class DeadlineReader(io.RawIOBase):
    """A raw socket reader whose reads all end by ``state.deadline`` (monotonic seconds)."""

    def __init__(self, state: ConnState) -> None:
        self.state = state

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        st = self.state
        left = st.deadline - time.monotonic()
        if st.evicted or left <= 0:
            raise TimeoutError("request not received within the deadline")
        st.sock.settimeout(left)
        n = st.sock.recv_into(buffer)
        if n == 0 and st.evicted:
            raise TimeoutError("connection evicted while reading its request")
        return n


class ConnectionGuard:
    """At most ``cap`` open connections, making room by evicting the longest slow reader."""

    def __init__(self, cap: int, *, read_timeout: float) -> None:
        self.cap = cap
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._open: dict[socket.socket, ConnState] = {}  # insertion order = age
        self.evictions = 0
        self.refused = 0

    def admit(self, sock: socket.socket) -> ConnState | None:
        """The new connection's state, or None when it must be refused (every slot busy with real work)."""
        now = time.monotonic()
        with self._lock:
            if len(self._open) >= self.cap and not self._evict_oldest_reader():
                self.refused += 1
                return None
            state = ConnState(sock, now + self.read_timeout)
            self._open[sock] = state
            return state

    def _evict_oldest_reader(self) -> bool:
        victim = next((s for s in self._open.values() if s.reading), None)
        if victim is None:
            return False
        victim.evicted = True
        del self._open[victim.sock]  # its thread ends on its own once the blocked read wakes up
        self.evictions += 1
        try:
            victim.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def state(self, sock: socket.socket) -> ConnState | None:
        """The state of an admitted connection; None once it has been evicted."""
        with self._lock:
            return self._open.get(sock)

    def request_read(self, state: ConnState) -> None:
        """The request is in: from now on the connection waits for work, and is never evicted."""
        with self._lock:
            state.reading = False

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def stats(self) -> dict:
        with self._lock:
            return {"open_connections": len(self._open), "reading": sum(s.reading for s in self._open.values()),
                    "evictions": self.evictions, "refused_connections": self.refused}
