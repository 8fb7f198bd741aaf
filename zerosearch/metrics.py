"""Metrics as JSONL (one object per step), optional TensorBoard, and the reward/noise plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON line per step and flushes it, so a killed run keeps every finished step."""

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

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines of steps the restored checkpoint has not seen."""
        rows = [r for r in read_metrics(self.path) if r.get("step", -1) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.path)

    def log(self, row: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in row.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, int | float) and k != "step":
                    self._tb.add_scalar(k, v, clean.get("step", 0))


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line from a killed writer
                continue
    return rows


def plot_training(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Reward (and F1) and the curriculum's noise probability against step, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
