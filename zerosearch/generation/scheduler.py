"""Batching of concurrent completion requests onto one completer: a bounded queue and one worker thread.

Why: a served simulator receives many small requests at once (one per search of each rollout, from many
trainer threads or runs). Answered one at a time, each is a batch of one and the engine's batching is never
used. Here the worker takes the oldest waiting request, waits at most ``batch_window`` (from that request's
arrival) for more compatible ones, takes up to ``max_batch`` prompts, completes them in one
:meth:`~zerosearch.generation.Generator.complete` call (one engine batch) and hands every request its own
completions. The completer is only ever called from the worker thread, so it needs no lock.

**When to start a batch.** Clients of a simulator run in a closed loop: each sends its next query soon after
its answer arrives, so after a batch ends its clients come back within milliseconds. The worker starts a batch
as soon as one of these holds: as many compatible prompts are queued as were admitted at once recently (the
peak over the last few batch durations; ``max_batch`` when nothing is known), so a lone client never waits
and returning groups are merged into one batch instead of alternating; no request has arrived for
``_QUIET_S`` (counted from the end of the previous batch at the earliest), so a burst is taken once it is
over; or ``batch_window`` has passed since the oldest request arrived or the previous batch ended.

**Shared prefix.** Every simulator prompt starts with the same instruction template; the engine prefills the
longest common token prefix of each batch once (``generation.shared_prefix``). A prefix declared by the
caller could never be longer than that common prefix (a prefix must be shared by every row) and finding it
costs one pass over the token ids, so no declared prefix is taken.

**Sampling settings differ per request** (temperature, top_p, max_tokens, stop, seed). Requests are *grouped*:
a batch holds only requests with equal settings, in arrival order. Mixing them would need per-row
temperature and top-p in the on-device sampler; the simulator's clients all send the settings of one config,
so grouping costs nothing where throughput matters, and an odd request simply waits for its own batch. A
request with a ``seed`` is batched only with itself: a batch's rows draw from one random stream, so this is
what makes the same seeded request give the same answer whatever else is being served.

**Continuous batching** (admitting requests into a running batch between decode steps) is not done: the
engine writes every row of a batch at the same cache slot after a common left-padded width, so a late row
would need a cache wider than its budget and a recaptured CUDA graph per admission. What it could win is
bounded by the time requests wait for a running batch and by the decode steps of rows that finished early;
``benchmarks/bench_simulator_serve.py`` measures both (see benchmarks/RESULTS.md).

**Deadlines.** :meth:`BatchScheduler.wait` gives up after ``timeout``: the request leaves the queue (if it is
still queued, it is never generated) and its admission slot is freed at once. A batch already running cannot be
interrupted; its cost is bounded by the caller's caps on prompts, prompt tokens and new tokens, and
:meth:`BatchScheduler.stats` reports how long it has been running so a health check can call it stuck.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from zerosearch.generation.base import Completion, SamplingParams, TextCompleter

__all__ = ["BatchScheduler", "QueueFull", "Ticket"]

_QUIET_S = 0.025  # a pause in arrivals this long ends the wait for more prompts


class QueueFull(RuntimeError):
    """Every admission slot is taken: the caller should answer "busy" at once instead of queueing."""


@dataclass(eq=False)
class Ticket:
    """One submitted request: its prompts and settings, then its completions or its error."""

    prompts: list[str]
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    seed: int | None
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    completions: list[Completion] | None = None
    error: BaseException | None = None
    state: str = "queued"  # queued | running | done | cancelled
    started: float | None = None

    @property
    def key(self) -> tuple:
        """Requests with equal keys may share a batch; a seeded request only shares with itself."""
        if self.seed is not None:
            return ("seeded", id(self))
        return (self.sampling, self.max_new_tokens, self.stop)


class BatchScheduler:
    """Queue + one worker: up to ``max_batch`` prompts per ``complete`` call, at most ``max_pending`` requests
    admitted (queued or generating) at once."""

    def __init__(self, completer: TextCompleter, *, max_batch: int = 64, batch_window: float = 0.01,
                 max_pending: int = 64) -> None:  # fmt: skip
        if max_batch < 1 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1")
        if batch_window < 0:
            raise ValueError("batch_window must be >= 0")
        self.completer = completer
        self.max_batch = max_batch
        self.batch_window = batch_window
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._queue: list[Ticket] = []
        self._admitted: set[Ticket] = set()  # queued or running, not yet finished or cancelled
        self._running: list[Ticket] = []
        self._running_since: float | None = None
        self._closed = False
        self._counts = {"batches": 0, "batched_prompts": 0, "requests_done": 0, "requests_cancelled": 0,
                        "requests_rejected": 0, "requests_failed": 0}  # fmt: skip
        self._wait_s = 0.0  # total time requests spent queued before their batch started
        self._admitted_prompts = 0
        self._peaks: deque[tuple[float, int]] = deque()  # (time, prompts admitted) at each submission
        self._free_since = 0.0  # when the worker finished its last batch
        self._last_arrival = 0.0
        self._last_batch_s = 0.0
        self._worker = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._worker.start()

    # -- callers -------------------------------------------------------------------------------------------
    def submit(self, prompts: Sequence[str], *, max_new_tokens: int, sampling: SamplingParams,
               stop: Sequence[str] = (), seed: int | None = None) -> Ticket:  # fmt: skip
        """Queue a request; raises :class:`QueueFull` when ``max_pending`` requests are already admitted."""
        if not prompts:
            raise ValueError("a request needs at least one prompt")
        ticket = Ticket(list(prompts), int(max_new_tokens), sampling, tuple(stop), seed, time.monotonic())
        with self._cond:
            if self._closed:
                raise QueueFull("the scheduler is shut down")
            if len(self._admitted) >= self.max_pending:
                self._counts["requests_rejected"] += 1
                raise QueueFull(f"{self.max_pending} requests are already queued or generating")
            self._admitted.add(ticket)
            self._admitted_prompts += len(ticket.prompts)
            self._peaks.append((ticket.arrived, self._admitted_prompts))
            self._last_arrival = ticket.arrived
            self._queue.append(ticket)
            self._cond.notify_all()
        return ticket

    def wait(self, ticket: Ticket, timeout: float | None) -> list[Completion]:
        """The ticket's completions; on ``timeout`` it is cancelled and TimeoutError is raised."""
        if not ticket.done.wait(timeout):
            self.cancel(ticket)
            if not ticket.done.is_set() or ticket.state == "cancelled":
                raise TimeoutError(f"no completion within {timeout} s")
        if ticket.error is not None:
            raise ticket.error
        assert ticket.completions is not None
        return ticket.completions

    def cancel(self, ticket: Ticket) -> None:
        """Drop a ticket: out of the queue if still queued (never generated), its slot freed either way."""
        with self._cond:
            if ticket.state in ("done", "cancelled"):
                return
            if ticket.state == "queued":
                self._queue.remove(ticket)
            ticket.state = "cancelled"
            self._release(ticket)
            self._counts["requests_cancelled"] += 1
            self._cond.notify_all()

    def stats(self) -> dict:
        """Queue depth, the running batch and its age, and totals (for /health and the benchmark)."""
        with self._cond:
            running_s = 0.0 if self._running_since is None else time.monotonic() - self._running_since
            answered = self._counts["requests_done"] + self._counts["requests_failed"]
            out = dict(self._counts)
            out.update(
                queued_requests=len(self._queue),
                queued_prompts=sum(len(t.prompts) for t in self._queue),
                running_prompts=sum(len(t.prompts) for t in self._running),
                running_for_s=running_s,
                admitted=len(self._admitted),
                max_pending=self.max_pending,
                mean_batch_prompts=self._counts["batched_prompts"] / max(1, self._counts["batches"]),
                mean_queue_wait_s=self._wait_s / max(1, answered),
                worker_alive=self._worker.is_alive(),
            )
            return out

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker; requests still queued fail with an error."""
        with self._cond:
            self._closed = True
            queued, self._queue = self._queue, []
            for t in queued:
                self._finish(t, error=RuntimeError("the server is shutting down"))
            self._cond.notify_all()
        self._worker.join(timeout)

    # -- worker --------------------------------------------------------------------------------------------
    def _finish(self, ticket: Ticket, *, completions: list[Completion] | None = None,
                error: BaseException | None = None) -> None:  # fmt: skip
        """Under the lock. A cancelled ticket's result is dropped (its caller has already been answered)."""
        if ticket.state != "cancelled":
            ticket.completions, ticket.error, ticket.state = completions, error, "done"
            self._counts["requests_done" if error is None else "requests_failed"] += 1
        self._release(ticket)
        ticket.done.set()

    def _release(self, ticket: Ticket) -> None:
        """Under the lock: free the ticket's admission slot (once)."""
        if ticket in self._admitted:
            self._admitted.discard(ticket)
            self._admitted_prompts -= len(ticket.prompts)

    def _target(self, first: Ticket, now: float) -> int:
        """Under the lock: prompts worth waiting for, from the peak admitted before ``first`` arrived."""
        horizon = max(5.0, 4 * self._last_batch_s)
        while self._peaks and self._peaks[0][0] < now - horizon:
            self._peaks.popleft()
        peak = max((n for t, n in self._peaks if t < first.arrived), default=self.max_batch)
        return min(self.max_batch, peak)

    def _compatible_prompts(self, key: tuple) -> int:
        return sum(len(t.prompts) for t in self._queue if t.key == key)

    def _take_batch(self) -> list[Ticket] | None:
        """Under the lock: wait for work and the batch window, then take one batch (None once closed)."""
        while True:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._queue[0]
            key = first.key
            until = max(first.arrived, self._free_since) + self.batch_window
            target = self._target(first, time.monotonic())
            while (first.seed is None and self._compatible_prompts(key) < target and not self._closed
                   and self._queue and self._queue[0] is first):  # fmt: skip
                now = time.monotonic()
                quiet = max(self._last_arrival, self._free_since) + _QUIET_S
                left = min(until, quiet) - now
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._closed:
                return None
            if not self._queue or self._queue[0] is not first:  # cancelled while we waited: start over
                continue
            batch, n = [], 0
            for t in self._queue:
                if t.key != key:
                    continue
                if batch and n + len(t.prompts) > self.max_batch:
                    break
                batch.append(t)
                n += len(t.prompts)
            now = time.monotonic()
            for t in batch:
                self._queue.remove(t)
                t.state, t.started = "running", now
                self._wait_s += now - t.arrived
            return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._take_batch()
                if batch is None:
                    return
                self._running, self._running_since = batch, time.monotonic()
            first = batch[0]
            prompts = [p for t in batch for p in t.prompts]
            try:
                out = []
                for k, i in enumerate(range(0, len(prompts), self.max_batch)):  # one request may exceed max_batch
                    seed = None if first.seed is None else first.seed + k
                    out += self.completer.complete(prompts[i : i + self.max_batch], max_new_tokens=first.max_new_tokens,
                                                   sampling=first.sampling, stop=first.stop, seed=seed)
                if len(out) != len(prompts):
                    raise RuntimeError(f"the completer returned {len(out)} completions for {len(prompts)} prompts")
                error = None
            except Exception as e:  # every waiting request must be answered
                out, error = [], e
            with self._cond:
                self._counts["batches"] += -(-len(prompts) // self.max_batch)
                self._counts["batched_prompts"] += len(prompts)
                i = 0
                for t in batch:
                    mine, i = out[i : i + len(t.prompts)], i + len(t.prompts)
                    bad = error or next((c for c in mine if not isinstance(c, Completion)), None)
                    if bad is not None and not isinstance(bad, BaseException):
                        bad = RuntimeError(f"the completer returned {type(bad).__name__}, not a Completion")
                    self._finish(t, completions=None if bad else mine, error=bad)
                self._free_since = time.monotonic()
                self._last_batch_s = self._free_since - self._running_since
                self._running, self._running_since = [], None
