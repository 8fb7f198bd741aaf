"""One generation interface (:class:`Generator`) with two implementations: the fast engine and the HF
reference, chosen once from the config (``generation.backend``). Rollouts, the simulator, its server and
evaluation all take a Generator."""

from zerosearch.generation.base import (
    Completion,
    GenerationOutput,
    Generator,
    SamplingParams,
    TextCompleter,
    apply_stop,
    stop_ids_for,
)
from zerosearch.generation.engine import EngineGenerator
from zerosearch.generation.hf import HFGenerator

__all__ = [
    "Completion",
    "EngineGenerator",
    "GenerationOutput",
    "Generator",
    "HFGenerator",
    "SamplingParams",
    "TextCompleter",
    "apply_stop",
    "stop_ids_for",
]
