"""Dry-run validation of a run config: names, value ranges, curriculum, batch shapes and paths.

A multi-GPU run that dies at step 0 (or worse, at the first checkpoint) on a typo wastes a queue slot
and an hour of loading 14B weights; everything here is checkable in a second without loading a model.
Types are already enforced by `zerosearch.config.load_config` (every key is checked against the dataclass
defaults); this adds the semantic checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zerosearch.config import (
    AGG_MODES,
    ALGOS,
    ATTN_IMPLEMENTATIONS,
    DTYPES,
    GENERATION_BACKENDS,
    KL_TYPES,
    LR_SCHEDULES,
    ON_NONFINITE,
    PACKING_MODES,
    SEARCH_BACKENDS,
    RunConfig,
)
from zerosearch.search.curriculum import noise_probability


@dataclass
class Report:
    """What `zerosearch validate` prints: errors fail the run, notes are informational."""

    errors: list[str] = field(default_factory=list)
    missing_paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def ok(self, *, allow_missing_paths: bool = False) -> bool:
        return not self.errors and (allow_missing_paths or not self.missing_paths)

    def render(self, *, allow_missing_paths: bool = False) -> str:
        lines = [f"error: {e}" for e in self.errors]
        tag = "missing (allowed)" if allow_missing_paths else "error: missing"
        lines += [f"{tag}: {p}" for p in self.missing_paths]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("OK" if self.ok(allow_missing_paths=allow_missing_paths) else "FAILED")
        return "\n".join(lines)


def _choice(report: Report, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        report.errors.append(f"{key}={value!r} is not one of {', '.join(choices)}")


def _range(report: Report, key: str, value: float, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False) -> None:
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
        report.errors.append(f"{key}={value} outside {left}{'-inf' if lo is None else lo}, "
                             f"{'inf' if hi is None else hi}{right}")


def _names(cfg: RunConfig, r: Report) -> None:
    _choice(r, "trainer.algo", cfg.trainer.algo, ALGOS)
    _choice(r, "trainer.kl_type", cfg.trainer.kl_type, KL_TYPES)
    _choice(r, "trainer.agg", cfg.trainer.agg, AGG_MODES)
    _choice(r, "trainer.lr_schedule", cfg.trainer.lr_schedule, LR_SCHEDULES)
    _choice(r, "trainer.on_nonfinite", cfg.trainer.on_nonfinite, ON_NONFINITE)
    _choice(r, "search.backend", cfg.search.backend, SEARCH_BACKENDS)
    _choice(r, "generation.backend", cfg.generation.backend, GENERATION_BACKENDS)
    _choice(r, "model.dtype", cfg.model.dtype, DTYPES)
    _choice(r, "model.attn_implementation", cfg.model.attn_implementation, ATTN_IMPLEMENTATIONS)
    _choice(r, "model.packed_sequences", cfg.model.packed_sequences, PACKING_MODES)
    if not (cfg.device == "cpu" or cfg.device == "cuda" or cfg.device.startswith("cuda:")):
        r.errors.append(f"device={cfg.device!r} must be cpu, cuda or cuda:N")
    if cfg.search.backend == "openai" and not cfg.search.base_url:
        r.errors.append("search.backend=openai needs search.base_url (e.g. http://localhost:8000/v1)")


def _ranges(cfg: RunConfig, r: Report) -> None:
    t, ro, s = cfg.trainer, cfg.rollout, cfg.search
    for key, value in (("trainer.steps", t.steps), ("trainer.batch_questions", t.batch_questions),
                       ("trainer.ppo_epochs", t.ppo_epochs), ("trainer.mini_batches", t.mini_batches),
                       ("rollout.n_samples", ro.n_samples), ("rollout.max_turns", ro.max_turns),
                       ("rollout.max_new_tokens", ro.max_new_tokens), ("search.top_k", s.top_k),
                       ("search.max_new_tokens", s.max_new_tokens), ("search.concurrency", s.concurrency)):
        _range(r, key, value, 1)
    for key, value in (("trainer.warmup_steps", t.warmup_steps), ("trainer.weight_decay", t.weight_decay),
                       ("trainer.kl_coef", t.kl_coef), ("trainer.entropy_coef", t.entropy_coef),
                       ("trainer.checkpoint_every", t.checkpoint_every), ("trainer.value_clip", t.value_clip),
                       ("trainer.keep_checkpoints", t.keep_checkpoints), ("search.max_retries", s.max_retries)):
        _range(r, key, value, 0)
    for key, value in (("trainer.lr", t.lr), ("trainer.critic_lr", t.critic_lr), ("trainer.grad_clip", t.grad_clip),
                       ("rollout.temperature", ro.temperature), ("search.temperature", s.temperature),
                       ("search.timeout", s.timeout)):
        _range(r, key, value, 0, lo_open=True)
    _range(r, "trainer.lr", t.lr, hi=1e-2)
    _range(r, "trainer.min_lr_ratio", t.min_lr_ratio, 0, 1)
    for key, value in (("trainer.clip_low", t.clip_low), ("trainer.clip_high", t.clip_high)):
        _range(r, key, value, 0, 1, hi_open=True)
    for key, value in (("trainer.gamma", t.gamma), ("trainer.lam", t.lam)):
        _range(r, key, value, 0, 1)
    _range(r, "rollout.top_p", ro.top_p, 0, 1, lo_open=True)
    if t.dual_clip is not None:
        _range(r, "trainer.dual_clip", t.dual_clip, 1, lo_open=True)
    if ro.max_context <= ro.max_new_tokens:
        r.errors.append(f"rollout.max_context={ro.max_context} must exceed rollout.max_new_tokens={ro.max_new_tokens}")
    if t.algo == "grpo" and ro.n_samples < 2:
        r.errors.append("trainer.algo=grpo needs rollout.n_samples >= 2 (a group of one has zero advantage)")


def _precision(cfg: RunConfig, r: Report) -> None:
    """Which dtypes the run will use, so a GPU run's precision is visible before any model loads."""
    from zerosearch.hf.loading import resolve_dtypes

    if cfg.model.dtype not in DTYPES or any(e.startswith("device=") for e in r.errors):
        return
    weights, compute = (str(d).removeprefix("torch.") for d in resolve_dtypes(cfg.model.dtype, cfg.device))
    r.notes.append(f"precision on {cfg.device} (model.dtype={cfg.model.dtype}): trained weights {weights}, compute "
                   f"{compute}; the frozen reference and a local simulator are stored in {compute}")


def _curriculum(cfg: RunConfig, r: Report) -> None:
    c, m = cfg.curriculum, cfg.trainer.steps
    _range(r, "curriculum.p_start", c.p_start, 0, 1)
    _range(r, "curriculum.p_end", c.p_end, 0, 1)
    _range(r, "curriculum.base", c.base, 0, lo_open=True)
    if c.base == 1:
        r.errors.append("curriculum.base must not be 1 (the schedule divides by b - 1)")
    if any(e.startswith("curriculum.") for e in r.errors) or m < 1:
        return
    ps = [noise_probability(i, m, c.p_start, c.p_end, c.base) for i in (0, m // 2, m - 1)]
    r.notes.append(f"noise p: step 0 → {ps[0]:.3f}, step {m // 2} → {ps[1]:.3f}, step {m - 1} → {ps[2]:.3f}")


def _batches(cfg: RunConfig, r: Report, world_size: int) -> None:
    t, n = cfg.trainer, cfg.rollout.n_samples
    if world_size < 1:
        r.errors.append(f"world size {world_size} must be >= 1")
        return
    if t.batch_questions % world_size:
        r.errors.append(f"trainer.batch_questions={t.batch_questions} is not a multiple of the world size "
                        f"{world_size} (each rank takes an equal share of whole questions)")
        return
    per_rank = t.batch_questions // world_size * n
    if per_rank < t.mini_batches:
        r.errors.append(f"{per_rank} rollouts per rank cannot fill trainer.mini_batches={t.mini_batches}")
    elif per_rank % t.mini_batches:
        r.notes.append(f"{per_rank} rollouts per rank split into {t.mini_batches} unequal mini-batches")
    r.notes.append(f"{t.batch_questions} questions x {n} rollouts = {t.batch_questions * n} per step; "
                   f"{per_rank} per rank on {world_size} rank(s), {per_rank // max(1, t.mini_batches)} per mini-batch")


def _paths(cfg: RunConfig, r: Report, command: str) -> None:
    """The paths the command will read, by backend: a train run never reads data.test_path, and so on."""
    m, d, backend = cfg.model, cfg.data, cfg.search.backend
    need = {"model.policy_path": m.policy_path}
    if m.tokenizer_path:
        need["model.tokenizer_path"] = m.tokenizer_path
    need["data.train_path" if command == "train" else "data.test_path"] = (
        d.train_path if command == "train" else d.test_path)
    if backend == "simulator":
        need["model.simulator_path"] = m.simulator_path
    if backend == "bm25":
        need["data.corpus_path"] = d.corpus_path
    for key, value in need.items():
        if not value:
            r.errors.append(f"{key} is empty")
            continue
        for part in (value.split(",") if key == "data.test_path" else [value]):
            if not Path(part).exists():
                r.missing_paths.append(f"{key}: {part}")


def validate_config(cfg: RunConfig, *, world_size: int = 1, command: str = "train") -> Report:
    """Every check that needs no model, GPU or network. `command` is train or eval (which paths are read)."""
    report = Report()
    _names(cfg, report)
    _ranges(cfg, report)
    _precision(cfg, report)
    _curriculum(cfg, report)
    _batches(cfg, report, world_size)
    _paths(cfg, report, command)
    return report
