"""Simulator SFT rows from disk: our pairs JSONL, or the released ZeroSearch simulation-tuning format.

Both become `SFTRow`s: `(text, trainable)` segments (the prompt is context, the documents are trained on, an EOS
is appended by the trainer) and the row's label, `useful` (None when a row does not say).

**Pairs JSONL** (what `zerosearch collect` writes and the toy pipeline builds): one object per line with `query`,
`question`, `golden_answers`, `documents` and `useful`. The prompt is `search.prompts.simulator_prompt(query,
question, golden_answers, useful)`, the target is `" " + format_documents(documents)` (`Doc i:` lines), exactly
what `SimulatorSearch` asks and parses at training time.

**ZeroSearch simulation-tuning rows** (the Alpaca layout LLaMA-Factory reads: a JSON array or JSONL of objects with
`instruction`, `input` and `output`): the prompt is `instruction`, then `"\\n" + input` when `input` is not empty
(LLaMA-Factory's Alpaca converter joins them the same way); the target is `" " + output`, kept verbatim (its
documents are already written out). The label is read from the instruction: it asks for "useful" or for "noisy"
documents (ZeroSearch's two prompts); an instruction that names neither (or both) leaves the label None. No chat
template is applied: the simulator is prompted with the raw text, as `SimulatorSearch` and `simulate --serve` do.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from zerosearch.rl.sft import Segments, SimulatorPair, balance_pairs, simulator_samples

PAIR_KEYS = ("query", "question", "golden_answers", "documents", "useful")
ALPACA_KEYS = ("instruction", "output")


@dataclass
class SFTRow:
    segments: Segments
    useful: bool | None


def _label(instruction: str) -> bool | None:
    useful = re.search(r"\buseful\b", instruction, re.IGNORECASE) is not None
    noisy = re.search(r"\bnoisy\b", instruction, re.IGNORECASE) is not None
    return useful if useful != noisy else None


def alpaca_row(obj: dict) -> SFTRow:
    """One ZeroSearch / LLaMA-Factory Alpaca row (see the module docstring for the mapping)."""
    instruction, extra = str(obj["instruction"]), str(obj.get("input") or "")
    prompt = instruction + (f"\n{extra}" if extra.strip() else "")
    return SFTRow([(prompt, False), (" " + str(obj["output"]).strip(), True)], _label(instruction))


def _pair(obj: dict) -> SimulatorPair:
    return SimulatorPair(str(obj["query"]), str(obj.get("question", "")), [str(a) for a in obj["golden_answers"]],
                         [str(d) for d in obj["documents"]], bool(obj["useful"]))


def pair_row(obj: dict) -> SFTRow:
    pair = _pair(obj)
    return SFTRow(simulator_samples([pair])[0], pair.useful)


def load_pairs(path: str | Path) -> list[SimulatorPair]:
    """The pairs JSONL rows of `path` (for `simulate --eval`); an error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    pairs = []
    for n, obj in _objects(path):
        if not (isinstance(obj, dict) and all(k in obj for k in PAIR_KEYS)):
            raise ValueError(f"{path}:{n}: a pair needs {', '.join(PAIR_KEYS)}")
        pairs.append(_pair(obj))
    if not pairs:
        raise ValueError(f"{path} holds no pairs")
    return pairs


def _objects(path: Path) -> list[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    if text.lstrip().startswith("["):  # LLaMA-Factory's dataset files are JSON arrays
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
    return out


def load_sft_rows(path: str | Path) -> list[SFTRow]:
    """Every row of `path`, each in whichever of the two layouts it has; an error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data not found: {path}")
    rows = []
    for n, obj in _objects(path):
        if isinstance(obj, dict) and all(k in obj for k in ALPACA_KEYS):
            rows.append(alpaca_row(obj))
        elif isinstance(obj, dict) and all(k in obj for k in PAIR_KEYS):
            rows.append(pair_row(obj))
        else:
            raise ValueError(f"{path}:{n}: a row needs {', '.join(PAIR_KEYS)} (pairs) or instruction, input, output "
                             "(ZeroSearch simulation-tuning format)")
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def label_counts(rows: list[SFTRow]) -> dict[str, int]:
    return {"useful": sum(r.useful is True for r in rows), "noisy": sum(r.useful is False for r in rows),
            "unlabelled": sum(r.useful is None for r in rows)}


def split_rows(rows: list[SFTRow], *, eval_rows: list[SFTRow] | None, eval_fraction: float, balance: bool,
               seed: int) -> tuple[list[SFTRow], list[SFTRow]]:
    """(train, held out): held-out rows come from `eval_rows` or a seeded `eval_fraction` of `rows`; the training
    rows are balanced (equal useful and noisy, unlabelled rows kept as they are) when `balance`."""
    rows = list(rows)
    if eval_rows is None:
        random.Random(seed).shuffle(rows)
        n_eval = round(len(rows) * eval_fraction) if eval_fraction > 0 else 0
        n_eval = min(max(n_eval, 1 if eval_fraction > 0 else 0), len(rows) - 1)
        eval_rows, rows = rows[len(rows) - n_eval :], rows[: len(rows) - n_eval]
    if balance:
        labelled = [r for r in rows if r.useful is not None]
        rows = balance_pairs(labelled, seed=seed) + [r for r in rows if r.useful is None]
    if not rows:
        raise ValueError("no training rows left after the held-out split and balancing")
    return rows, eval_rows
