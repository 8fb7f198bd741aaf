"""The one interface every generator implements: token ids in, sampled ids and their log-probs out.

Rollouts need token-level generation (the trained ids must be the sampled ids, with the sampler's
log-probs, stopping on tag ids, one budget per row, ``n`` samples per prompt). The simulator and its HTTP
server need batched text completion with stop strings. :class:`Generator` implementations supply the
former (:meth:`Generator.generate`); the latter (:meth:`Generator.complete`) is built on it once, here, so
both backends — the fast engine and the Hugging Face reference — behave the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from zerosearch.engine.engine import GenerationOutput
from zerosearch.engine.sampler import DEFAULT_SAMPLING, SamplingParams

__all__ = ["DEFAULT_SAMPLING", "Completion", "GenerationOutput", "Generator", "SamplingParams", "TextCompleter",
           "apply_stop", "stop_ids_for"]


@dataclass
class Completion:
    """One text completion, with the counts an OpenAI-style server reports."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (eos or a stop string) | "length" (the token budget ran out)


class TextCompleter(Protocol):
    """Anything that completes text prompts: a local :class:`Generator` or a client of a completions server.

    An item of the result may be an Exception instead of a Completion: that prompt alone failed.
    """

    def complete(self, prompts: list[str], *, max_new_tokens: int, sampling: SamplingParams,
                 stop: Sequence[str] = (), seed: int | None = None) -> list[Completion | Exception]: ...


def apply_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string (OpenAI semantics: the stop string is not returned)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Generator(ABC):
    """Batched generation from a causal LM. ``tokenizer`` is needed by :meth:`complete` only."""

    max_batch: int = 256  # prompts per `generate` call inside `complete`

    def __init__(self, tokenizer=None, *, pad_id: int | None = None) -> None:
        self.tokenizer = tokenizer
        if pad_id is None and tokenizer is not None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad_id or 0)

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams = DEFAULT_SAMPLING,
        stop_ids: Sequence[int] = (),
        n: int = 1,
        seed: int | None = None,
    ) -> GenerationOutput:
        """Continue every prompt ``n`` times (row ``r`` = sample ``r % n`` of prompt ``r // n``).

        Each row is cut just after its first stop id, or at its prompt's budget (one int, or one per prompt).
        Log-probs are those of the sampled tokens under the temperature-scaled distribution before any top-k /
        top-p cut (temperature 1 when greedy). ``seed=None`` follows torch's global generator.
        """

    def complete(self, prompts: list[str], *, max_new_tokens: int, sampling: SamplingParams = DEFAULT_SAMPLING,
                 stop: Sequence[str] = (), seed: int | None = None) -> list[Completion]:
        """Continue each text prompt; only the new text (special tokens dropped), cut before any stop string."""
        if self.tokenizer is None:
            raise ValueError("text completion needs a generator built with a tokenizer")
        if not prompts:
            return []
        stop_ids = stop_ids_for(self.tokenizer)
        out: list[Completion] = []
        for i, start in enumerate(range(0, len(prompts), self.max_batch)):
            ids = [list(x) for x in self.tokenizer(prompts[start : start + self.max_batch])["input_ids"]]
            gen = self.generate(ids, max_new_tokens=max_new_tokens, sampling=sampling, stop_ids=stop_ids,
                                seed=None if seed is None else seed + i)
            texts = self.tokenizer.batch_decode(gen.token_ids, skip_special_tokens=True)
            for p, toks, text, stopped in zip(ids, gen.token_ids, texts, gen.stopped):
                text, hit = apply_stop(text, stop)
                out.append(Completion(text, len(p), len(toks), "stop" if stopped or hit else "length"))
        return out


def stop_ids_for(tokenizer, extra: Sequence[int] = ()) -> list[int]:
    """The tokenizer's eos followed by the extra stop ids, without repeats."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    for t in extra:
        if int(t) not in ids:
            ids.append(int(t))
    return ids
