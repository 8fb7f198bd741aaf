"""The run directory (`out_dir`): which files a run owns, when a command may write there, and what a failed write
says.

Why a fresh run must not start on top of another: nothing fails, the two runs corrupt each other. Retention sorts
the earlier run's higher steps above the new ones and deletes the new checkpoints, a later `--resume` continues
the earlier run, and the metrics interleave. So a fresh run refuses a directory that holds a run's files, `--resume`
continues only the run whose config it was given (or is told the config changed), and `--overwrite` deletes
exactly the files a run writes, nothing a user put beside them. The commands (train, eval, toy) share these
helpers, each with its own list of file names.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# What `zerosearch train` writes into out_dir (glob patterns, top level only).
TRAIN_OUTPUTS = ("checkpoints", "metrics.jsonl", ".metrics.jsonl.tmp-*", "training.png", "config.yaml", "final",
                 "tb", "nonfinite-step*.pt")

# Keys that say where and how fast a run executes, not what it computes: a run may resume with them changed
# (moved to another directory or filesystem, other GPUs, another server address, another attention kernel).
RESUME_FREE_KEYS = ("out_dir", "cache_dir", "device", "model.attn_implementation", "model.gradient_checkpointing",
                    "model.packed_sequences", "generation.backend", "generation.cuda_graph",
                    "generation.shared_prefix", "search.base_url", "search.timeout", "search.max_retries",
                    "search.concurrency", "data.test_path", "data.max_test_examples", "trainer.checkpoint_every",
                    "trainer.keep_checkpoints")


class WriteError(OSError):
    """A run's output could not be written (disk full, read-only file system, quota): the message names the file."""

    def __init__(self, path: str | Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.filename = str(path)

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised inside the block into a WriteError naming `path` (the innermost name wins)."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, exc) from exc


def run_files(out_dir: str | Path, names: tuple[str, ...] = TRAIN_OUTPUTS) -> list[Path]:
    """The entries of `out_dir` that a run writes (by `names`), sorted; none if the directory does not exist."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if any(fnmatch.fnmatchcase(p.name, n) for n in names))


def used_error(path: str | Path, found: list[Path], *, what: str = "out_dir") -> ValueError:
    """The one-line refusal of a fresh run on top of an earlier one's files."""
    shown = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
    return ValueError(f"{what} {path} already holds an earlier run ({shown}): add --resume to continue it, "
                      f"--overwrite to replace it, or choose a new {what}")


def prepare_out_dir(out_dir: str | Path, *, resume: bool, overwrite: bool, clear: bool = True,
                    names: tuple[str, ...] = TRAIN_OUTPUTS) -> list[Path]:
    """Before a run writes anything: refuse a used `out_dir` for a fresh run; with `overwrite`, delete its run
    files (only where `clear`: rank 0 of a torchrun job). Returns what was deleted."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: pass one of them")
    found = run_files(out_dir, names)
    if not found or resume:
        return []
    if not overwrite:
        raise used_error(out_dir, found)
    if clear:
        for p in found:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()  # a symlink goes, never what it points to
        log.info("--overwrite: deleted %s from %s", ", ".join(p.name for p in found), out_dir)
    return found


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"trainer": {"lr": 1}} -> {"trainer.lr": 1}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(saved: dict[str, Any], current: dict[str, Any],
                   free: tuple[str, ...] = RESUME_FREE_KEYS) -> list[str]:
    """`key: saved -> current` for every key both configs have that differs, except the `free` ones (a key that
    only one side knows was added or removed by a code change; its default keeps the old behaviour)."""
    a, b = flat(saved), flat(current)
    keys = sorted((set(a) & set(b)) - set(free))
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in keys if a[k] != b[k]]


def check_resume_config(checkpoint: str | Path, saved: dict[str, Any] | None, current: dict[str, Any], *,
                        allow_change: bool) -> list[str]:
    """Refuse to resume a checkpoint written with another config unless `allow_change`; returns the changes."""
    if saved is None:
        log.warning("%s does not record its config: cannot check that --resume continues the same run", checkpoint)
        return []
    changes = config_changes(saved, current)
    if changes and not allow_change:
        raise ValueError(f"--resume: {checkpoint} was written with another config ({'; '.join(changes)}): run with "
                         "the same config, or add --allow-config-change to continue it with this one")
    if changes:
        log.warning("--allow-config-change: resuming %s with %s", checkpoint, "; ".join(changes))
    return changes


def dir_problem(path: str | Path) -> str | None:
    """Why a run could not create or write the directory `path`, or None."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a directory"
    return _creatable(path)


def file_problem(path: str | Path) -> str | None:
    """Why a command could not write the file `path`, or None."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory, not a file"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    return _creatable(path.parent)


def _creatable(path: Path) -> str | None:
    """None if `path` exists as a writable directory or can be created under its nearest existing ancestor."""
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, so {path} cannot be created"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None
