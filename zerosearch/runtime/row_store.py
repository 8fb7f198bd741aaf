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
from pathlib import Path
from typing import Any

from zerosearch.runtime.jsonl import append_jsonl, read_jsonl, write_jsonl_atomic

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
