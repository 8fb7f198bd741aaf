"""Atomic, resumable checkpoints.

A checkpoint is a directory written under a temporary name and renamed into place in one step, so a
crash (even SIGKILL) mid-write leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zerosearch.runtime.run_dir import writing

_NAME = re.compile(r"^step-(\d{8})$")
log = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same directory, fsync, then os.replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `root/step-XXXXXXXX/state.pt` atomically and delete all but the newest `keep` (keep <= 0: all).

    Order matters for crash safety: the new checkpoint is complete and renamed into place before any
    older one is deleted, so at every instant at least one complete checkpoint exists. Checkpoints of
    steps above `step` are deleted too: the run writing `step` has left that history (it resumed from an
    older checkpoint, or another run wrote them), and kept, they would outrank the new ones in retention
    and in the next resume. A failed write (disk full, read-only) raises a WriteError naming the checkpoint
    and leaves no temporary directory behind.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    root = Path(root)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    try:
        with writing(final / "state.pt"):
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            atomic_torch_save(state, tmp / "state.pt")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    done = list_checkpoints(root)
    older = [p for p in done if _step(p) <= step]
    stale = [p for p in done if _step(p) > step] + (older[:-keep] if keep > 0 else [])
    for old in stale:
        shutil.rmtree(old, ignore_errors=True)
    for debris in root.glob(".tmp-step-*"):  # of a crashed writer
        shutil.rmtree(debris, ignore_errors=True)
    return final


def _step(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def list_checkpoints(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "state.pt").is_file()]
    return sorted(done, key=_step)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)


def load_latest_checkpoint(root: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that actually loads, with its state; None when there is none.

    Renames make a torn write impossible on a POSIX file system, but a file can still be damaged
    afterwards (disk full on a copy, a bad network mount); one unreadable checkpoint then costs the
    steps since the previous one instead of the whole run.
    """
    for path in reversed(list_checkpoints(root)):
        try:
            return path, load_checkpoint(path)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as e:
            log.warning("checkpoint %s is unreadable (%s: %s); trying an older one", path, type(e).__name__, e)
    return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
