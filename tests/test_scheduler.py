"""BatchScheduler: concurrent requests become one completer call, settings are never mixed, the queue is
bounded, deadlines free slots, and failures reach exactly the requests they belong to."""

from __future__ import annotations

import threading
import time

import pytest

from zerosearch.generation import BatchScheduler, Completion, QueueFull, SamplingParams

GREEDY = SamplingParams(greedy=True)


class Recorder:
    """A TextCompleter that answers `<prompt>|<settings>` and records every call; `gate` holds calls back."""

    def __init__(self, fail_on: str | None = None, item_error_on: str | None = None, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[dict] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on, self.item_error_on = fail_on, item_error_on

    def complete(self, prompts, *, max_new_tokens, sampling, stop=(), seed=None):
        self.calls.append({"prompts": list(prompts), "max_new_tokens": max_new_tokens, "sampling": sampling,
                           "stop": tuple(stop), "seed": seed})
        self.entered.set()
        assert self.gate.wait(10)
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in prompts:
            raise RuntimeError("boom")
        return [ValueError("bad item") if p == self.item_error_on else
                Completion(f"{p}|{max_new_tokens}|{seed}", 1, 1, "stop") for p in prompts]


def _submit_all(sched, items, **kw):
    return [sched.submit(p, max_new_tokens=kw.get("max_new_tokens", 4), sampling=kw.get("sampling", GREEDY),
                         seed=kw.get("seed")) for p in items]


def test_concurrent_requests_share_one_call_in_order():
    rec = Recorder()
    sched = BatchScheduler(rec, max_batch=8, batch_window=0.5)
    try:
        tickets = _submit_all(sched, [["a"], ["b", "c"], ["d"]])
        outs = [sched.wait(t, 5) for t in tickets]
        assert [[c.text for c in o] for o in outs] == [["a|4|None"], ["b|4|None", "c|4|None"], ["d|4|None"]]
        assert [c["prompts"] for c in rec.calls] == [["a", "b", "c", "d"]]
        assert sched.stats()["batches"] == 1 and sched.stats()["mean_batch_prompts"] == 4
    finally:
        sched.close()


def test_batch_is_cut_at_max_batch_and_window_is_bounded():
    rec = Recorder()
    sched = BatchScheduler(rec, max_batch=3, batch_window=0.2)
    try:
        t0 = time.monotonic()
        tickets = _submit_all(sched, [["a", "b"], ["c"], ["d", "e"], ["f"]])
        for t in tickets:
            sched.wait(t, 5)
        assert [c["prompts"] for c in rec.calls] == [["a", "b", "c"], ["d", "e", "f"]]
        big = _submit_all(sched, [["g", "h", "i", "j"]], seed=3)[0]  # more than max_batch: split, never over it
        assert [c.text for c in sched.wait(big, 5)] == ["g|4|3", "h|4|3", "i|4|3", "j|4|4"]
        assert [c["prompts"] for c in rec.calls[2:]] == [["g", "h", "i"], ["j"]]
        lone = _submit_all(sched, [["z"]])[0]
        t1 = time.monotonic()
        sched.wait(lone, 5)
        assert time.monotonic() - t1 < 0.15  # a lone request does not wait out the window
        assert time.monotonic() - t0 < 5
    finally:
        sched.close()


def test_settings_are_grouped_and_seeded_requests_run_alone():
    rec = Recorder()
    rec.gate.clear()
    sched = BatchScheduler(rec, max_batch=16, batch_window=0.05)
    try:
        blocker = _submit_all(sched, [["x"]])[0]  # holds the worker so the rest queue up together
        assert rec.entered.wait(5)
        a = _submit_all(sched, [["a1"], ["a2"]], max_new_tokens=4)
        b = _submit_all(sched, [["b1"]], max_new_tokens=9)
        s = _submit_all(sched, [["s1"], ["s2"]], seed=7)
        c = _submit_all(sched, [["c1"]], sampling=SamplingParams(temperature=0.5))
        rec.gate.set()
        for t in [blocker, *a, *b, *s, *c]:
            sched.wait(t, 5)
        calls = [(c["prompts"], c["max_new_tokens"], c["seed"], c["sampling"]) for c in rec.calls[1:]]
        assert calls == [(["a1", "a2"], 4, None, GREEDY), (["b1"], 9, None, GREEDY), (["s1"], 4, 7, GREEDY),
                         (["s2"], 4, 7, GREEDY), (["c1"], 4, None, SamplingParams(temperature=0.5))]
        assert [sched.wait(t, 0)[0].text for t in s] == ["s1|4|7", "s2|4|7"]
    finally:
        sched.close()


def test_queue_is_bounded_and_a_timed_out_request_is_never_generated():
    rec = Recorder()
    rec.gate.clear()
    sched = BatchScheduler(rec, max_batch=4, batch_window=0.0, max_pending=2)
    try:
        running = _submit_all(sched, [["run"]])[0]
        assert rec.entered.wait(5)
        queued = _submit_all(sched, [["late"]])[0]
        with pytest.raises(QueueFull):
            _submit_all(sched, [["over"]])
        with pytest.raises(TimeoutError):
            sched.wait(queued, 0.05)  # gives up while queued: its slot is freed at once
        again = _submit_all(sched, [["again"]])[0]
        with pytest.raises(TimeoutError):
            sched.wait(running, 0.05)  # gives up while running: the slot is freed, the batch runs on
        assert sched.stats()["admitted"] == 1
        rec.gate.set()
        assert sched.wait(again, 5)[0].text == "again|4|None"
        assert [c["prompts"] for c in rec.calls] == [["run"], ["again"]]  # "late" was never generated
        assert sched.stats()["requests_cancelled"] == 2
    finally:
        sched.close()


def test_failures_reach_their_own_requests():
    rec = Recorder(fail_on="boom", item_error_on="bad")
    sched = BatchScheduler(rec, max_batch=8, batch_window=0.3)
    try:
        ok, bad = _submit_all(sched, [["fine"], ["bad"]])
        assert sched.wait(ok, 5)[0].text == "fine|4|None"
        with pytest.raises(ValueError, match="bad item"):
            sched.wait(bad, 5)
        x, y = _submit_all(sched, [["x"], ["boom"]])
        for t in (x, y):
            with pytest.raises(RuntimeError, match="boom"):
                sched.wait(t, 5)
        assert sched.stats()["requests_failed"] == 3 and sched.stats()["admitted"] == 0
    finally:
        sched.close()


def test_close_fails_queued_requests():
    rec = Recorder()
    rec.gate.clear()
    sched = BatchScheduler(rec, max_batch=1, batch_window=0.0)
    first = _submit_all(sched, [["a"]])[0]
    assert rec.entered.wait(5)
    second = _submit_all(sched, [["b"]])[0]
    sched.close(timeout=0)  # while "a" is still generating
    rec.gate.set()
    assert sched.wait(first, 5)[0].text == "a|4|None"
    with pytest.raises(RuntimeError, match="shutting down"):
        sched.wait(second, 5)
    with pytest.raises(QueueFull):
        _submit_all(sched, [["c"]])


def test_closed_loop_clients_are_batched_without_waiting_out_the_window():
    """The worker learns how many prompts come back and starts as soon as they are in, not after the window."""
    rec = Recorder(delay=0.1)
    sched = BatchScheduler(rec, max_batch=8, batch_window=0.6)
    try:
        t1 = time.monotonic()
        for i in range(3):
            sched.wait(_submit_all(sched, [[f"lone{i}"]])[0], 5)
        assert time.monotonic() - t1 < 1.2  # a lone client does not wait (3 x 0.1 s; three windows: 1.8 s)

        def client(w: int) -> None:
            for r in range(4):
                sched.wait(_submit_all(sched, [[f"c{w}.{r}"]])[0], 5)

        threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        sizes = [len(c["prompts"]) for c in rec.calls[3:]]
        assert sum(sizes) == 16 and sizes[-2:] == [4, 4]  # once the four are known, they run together
        assert time.monotonic() - t1 < 3.0  # and no batch waited out the window
    finally:
        sched.close()
