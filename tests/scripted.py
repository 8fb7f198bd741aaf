"""Scripted stand-ins for a Generator: the rollout tests hand the runner exact token ids, including what a
misbehaving generator (ignored stop ids or budgets, misaligned log-probs) would produce."""

from __future__ import annotations

from zerosearch.generation import Completion, GenerationOutput, Generator


def output(rows: list[list[int]], logprobs: list[list[float]], stop_ids) -> GenerationOutput:
    """A GenerationOutput whose `stopped` says whether each row ends on a stop id."""
    stops = set(stop_ids)
    return GenerationOutput(rows, logprobs, [bool(r) and r[-1] in stops for r in rows])


class ScriptedGenerator(Generator):
    """Subclasses implement `script(contexts, max_new_tokens, stop_ids) -> (rows, logprobs)`."""

    def generate(self, prompts, *, max_new_tokens, sampling=None, stop_ids=(), n=1, seed=None):
        if isinstance(max_new_tokens, int):
            max_new_tokens = [max_new_tokens] * len(prompts)
        rows, lps = self.script([list(p) for p in prompts], list(max_new_tokens), list(stop_ids))
        return output(rows, lps, stop_ids)


class FnCompleter:
    """A TextCompleter from a function of the prompts: one text (or an Exception, for a failed prompt) each."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def complete(self, prompts, *, max_new_tokens=16, sampling=None, stop=(), seed=None):
        return [o if o is None or isinstance(o, BaseException) else Completion(str(o), 0, 0, "stop")
                for o in self.fn(list(prompts))]
