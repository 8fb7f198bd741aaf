"""Crash-safe JSON-lines files: the one format for metrics and per-row results.

Appends are flushed and fsynced before returning, rewrites go through a temporary file and a rename,
and reading skips a line torn by a killed writer instead of failing on it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from zerosearch.runtime.run_dir import writing


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects in `path` (none if it does not exist), and how many non-blank lines were not one."""
    path = Path(path)
    if not path.exists():
        return [], 0
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def append_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Append one line per row and make it durable before returning (a failed write raises a WriteError naming
    `path`; a line it cut short is healed by the next reader or writer)."""
    with writing(path), open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` in one step: a crash leaves the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with writing(path):
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """One line per row, written atomically (`write_text_atomic`)."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Indented JSON, written atomically (`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2))
