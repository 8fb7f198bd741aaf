"""Durable per-row results for long evaluations.

Why: scoring the seven test sets takes hours at scale, and a crash (OOM, pre-emption, a dead search
server) must not throw that away. Each rank appends its rows to its own part file as batches finish
(flushed and fsynced), so at most the batch in flight is lost; the finished result is one JSONL in the
test sets' order, written atomically. Reading skips a line cut short by a crash. A resumed run first
folds every part into the merged file, so each run appends to fresh parts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from zerosearch.runtime import distributed
from zerosearch.runtime.jsonl import append_jsonl, read_jsonl, write_jsonl_atomic
from zerosearch.runtime.run_dir import file_problem, used_error

T = TypeVar("T")

log = logging.getLogger(__name__)


class RowStore:
    """`path` (the merged result) plus `<stem>.part<rank><suffix>` files that ranks append to."""

    def __init__(self, path: str | Path, rank: int = 0) -> None:
        self.path = Path(path)
        self.part = self._part_name(rank)

    def _part_name(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.stem}.part{rank}{self.path.suffix}")

    def part_files(self) -> list[Path]:
        """Part files of any rank (an interrupted run may have used another world size)."""
        name = re.compile(rf"{re.escape(self.path.stem)}\.part\d+{re.escape(self.path.suffix)}")
        if not self.path.parent.is_dir():
            return []
        return sorted(p for p in self.path.parent.iterdir() if name.fullmatch(p.name))

    def read_all(self) -> dict[str, dict[str, Any]]:
        """Every row written so far, merged result and parts, by uid (a later copy wins)."""
        rows: dict[str, dict[str, Any]] = {}
        bad = 0
        for f in [self.path, *self.part_files()]:
            got, n_bad = read_jsonl(f)
            bad += n_bad + sum("uid" not in r for r in got)
            rows.update((str(r["uid"]), r) for r in got if "uid" in r)
        if bad:
            log.warning("%s: skipped %d unreadable line(s), rows cut short by an interrupted run", self.path, bad)
        return rows

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Add finished rows to this rank's part file, durably, before the next batch starts."""
        if rows:
            self.part.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(self.part, rows)

    def write_merged(self, rows: list[dict[str, Any]]) -> None:
        """Replace the merged result with `rows` in one step, then drop the part files it now holds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(self.path, rows)
        for p in self.part_files():
            p.unlink()

    def clear(self) -> None:
        """Forget an earlier run's rows (a fresh evaluation into the same path)."""
        for p in [self.path, *self.part_files()]:
            p.unlink(missing_ok=True)


def check_row_output(out: Path, *, resume: bool, overwrite: bool, flag: str = "--out") -> None:
    """Before anything loads: `out` must be a writable file, and a fresh run must not silently discard the rows of
    an earlier one (or a file that is not ours)."""
    problem = file_problem(out)
    if problem:
        raise ValueError(f"{flag}: {problem}")
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: pass one of them")
    found = [p for p in [out, *RowStore(out).part_files()] if p.is_file() and p.stat().st_size > 0]
    if found and not (resume or overwrite):
        raise used_error(out, found, what=flag)


def map_resumable(items: Sequence[T], uid: Callable[[T], str], produce: Callable[[list[T]], list[dict[str, Any]]], *,
                  out_jsonl: str | Path | None = None, resume: bool = False, batch_size: int = 64,
                  progress: bool = True, desc: str = "", source: str = "the input", run_name: str = "run"
                  ) -> list[dict[str, Any]]:
    """One row per item (`produce` maps a batch of items to their rows, each with the item's `uid`), in `items`
    order, on every rank.

    Under torchrun each rank takes every world-size-th item. With `out_jsonl`, rows are saved as batches finish and
    `resume` skips the items already saved there, so an interrupted run continues where it stopped, on any number
    of ranks; without `resume` an earlier run's rows are forgotten.
    """
    uids = [uid(x) for x in items]
    if len(set(uids)) != len(uids):
        raise ValueError(f"the questions of {source} need unique uids")
    store = RowStore(out_jsonl, distributed.rank()) if out_jsonl is not None else None
    done = _start(store, set(uids), resume, f"{source}: --resume only continues the same {run_name}")
    todo = [x for x, u in zip(items, uids) if u not in done]
    mine = todo[distributed.rank()::distributed.world_size()]
    new: list[dict[str, Any]] = []
    bar = tqdm(total=len(mine), desc=desc, disable=not (progress and distributed.is_main()), dynamic_ncols=True)
    for start in range(0, len(mine), batch_size):
        chunk = list(mine[start:start + batch_size])
        rows = produce(chunk)
        if store is not None:
            store.append(rows)
        new += rows
        bar.update(len(chunk))
    bar.close()
    by_uid = done | {str(r["uid"]): r for part in distributed.gather_objects(new) for r in part}
    rows = [by_uid[u] for u in uids]
    if store is not None and distributed.is_main():
        store.write_merged(rows)
    return rows


def _start(store: RowStore | None, uids: set[str], resume: bool, stale_hint: str) -> dict[str, dict[str, Any]]:
    """Rows an earlier run saved (with `resume`), after every rank has read them and rank 0 has folded them
    into the merged file; without `resume`, an empty slate."""
    if store is None:
        return {}
    done = store.read_all() if resume else {}
    stale = set(done) - uids
    if stale:
        raise ValueError(f"{store.path} holds {len(stale)} rows for questions not in {stale_hint} (drop --resume to "
                         "start over)")
    distributed.barrier()  # every rank has read before rank 0 rewrites
    if distributed.is_main():
        if resume:
            store.write_merged(list(done.values()))
        else:
            store.clear()
    distributed.barrier()
    return done
