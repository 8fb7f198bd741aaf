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
from zerosearch.generation.scheduler import BatchScheduler, QueueFull

__all__ = [
    "BatchScheduler",
    "Completion",
    "EngineGenerator",
    "GenerationOutput",
    "Generator",
    "HFGenerator",
    "QueueFull",
    "SamplingParams",
    "TextCompleter",
    "apply_stop",
    "stop_ids_for",
]
