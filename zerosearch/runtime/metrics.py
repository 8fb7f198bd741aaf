"""Metrics as JSONL (one object per step), optional TensorBoard, and the reward/noise plot."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from zerosearch.runtime.jsonl import append_jsonl, read_jsonl, write_jsonl_atomic
from zerosearch.runtime.run_dir import writing

log = logging.getLogger(__name__)


class MetricsLogger:
    """Appends one JSON line per step and flushes it, so a killed run keeps every finished step.

    The file stays one row per step even when a killed run is restarted without (or before) a
    checkpoint: the first row logged for step s first drops any rows of steps >= s left by the earlier
    process, and a torn last line (no trailing newline) is removed before anything is appended to it.
    """

    def __init__(self, path: str | Path, *, tensorboard: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path.parent / "tb"))
            except ImportError:
                self._tb = None
        self._checked = False  # whether the file on disk has been checked for debris of a killed writer

    def truncate_after(self, step: int) -> list[int]:
        """On resume: drop lines of steps the restored checkpoint has not seen (and any torn line).

        Returns the steps 0..`step` that the file lacks (deleted or cut by hand), with a warning: the run goes
        on, and the file then restarts there instead of silently holding fewer steps than the run made.
        """
        existed = self.path.exists()
        kept = [r for r in read_metrics(self.path) if _step_of(r) <= step]
        write_jsonl_atomic(self.path, kept)
        self._checked = True
        missing = sorted(set(range(step + 1)) - {_step_of(r) for r in kept})
        if missing:
            lost = f"step {missing[0]}" if len(missing) == 1 else f"{len(missing)} steps ({missing[0]}..{missing[-1]})"
            how = "was restarted: it did not exist" if not existed else "lacks them"
            log.warning("%s %s; %s of the resumed run are not in it, logging continues at step %d", self.path, how,
                        lost, step + 1)
        return missing

    def _heal(self, step: int) -> None:
        """Before the first append: remove rows of steps >= `step` and a torn last line."""
        self._checked = True
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn or any(_step_of(r) >= step for r in read_metrics(self.path)):
            self.truncate_after(step - 1)

    def log(self, row: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in row.items()}
        if not self._checked:
            step = clean.get("step")
            self._heal(step if isinstance(step, int) else 1 << 62)
        append_jsonl(self.path, [clean])
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, int | float) and k != "step":
                    self._tb.add_scalar(k, v, clean.get("step", 0))


def _step_of(row: dict[str, Any]) -> int:
    step = row.get("step", -1)
    return step if isinstance(step, int) else -1


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The logged steps; a line torn by a killed writer is skipped."""
    return read_jsonl(path)[0]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on training machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png: str | Path) -> Path:
    """Lay out, write atomically (a killed run never leaves a torn PNG) and close a figure."""
    out_png = Path(out_png)
    fig.tight_layout()
    try:
        with writing(out_png):
            fig.savefig(out_png, dpi=100)
    finally:
        pyplot().close(fig)
    return out_png


def plot_training(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Reward (and F1) and the curriculum's noise probability against step, in one PNG."""
    plt = pyplot()
    rows = [r for r in read_metrics(metrics_path) if "reward" in r]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["reward"] for r in rows], label="reward (F1)", color="tab:blue")
    if rows and "em" in rows[0]:
        ax.plot(steps, [r["em"] for r in rows], label="EM", color="tab:green", alpha=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax2 = ax.twinx()
    ax2.plot(steps, [r.get("noise_p", 0.0) for r in rows], label="noise p", color="tab:red", ls="--")
    ax2.set_ylabel("noise probability")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left")
    ax.set_title("zerosearch training")
    return save_figure(fig, out_png)
