"""The order in which training questions are drawn: seeded per epoch, with a resumable position."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DataStream:
    """Seeded epoch-wise shuffling with a resumable position: the data order survives --resume."""

    size: int
    seed: int
    epoch: int = 0
    pos: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def _perm(self) -> list[int]:
        return np.random.RandomState(self.seed + self.epoch).permutation(self.size).tolist()

    def next(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if not self._order:
                self._order = self._perm()
            if self.pos >= self.size:
                self.epoch, self.pos, self._order = self.epoch + 1, 0, []
                continue
            out.append(self._order[self.pos])
            self.pos += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.pos, self._order = state["epoch"], state["pos"], []
