"""Dry-run validation of a run config: names, value ranges, curriculum, batch shapes and paths.

A multi-GPU run that dies at step 0 (or worse, at the first checkpoint) on a typo wastes a queue slot
and an hour of loading 14B weights; everything here is checkable in seconds without loading a model.
Types are already enforced by `zerosearch.config.load_config` (every key is checked against its declared
type); this adds the semantic checks. Every command runs them before it does anything (`zerosearch.cli`), so
what `validate` passes is what `train` and `eval` accept, and a rejected config writes nothing.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerosearch.config import (
    AGG_MODES,
    ALGOS,
    ATTN_IMPLEMENTATIONS,
    DTYPES,
    GENERATION_BACKENDS,
    GRPO_SINGLETON,
    JUDGE_APIS,
    KL_TYPES,
    LABEL_RULES,
    LR_SCHEDULES,
    ON_NONFINITE,
    PACKING_MODES,
    SEARCH_BACKENDS,
    RunConfig,
)
from zerosearch.data.qa import load_qa
from zerosearch.eval.test_sets import load_test_sets
from zerosearch.runtime.run_dir import dir_problem
from zerosearch.search.curriculum import noise_probability

MAX_SEED = 2**32 - 1  # numpy's seeds (the data order) must fit in 32 bits


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
        tag = "missing (allowed)" if allow_missing_paths else "error"
        lines += [f"{tag}: {p}" for p in self.missing_paths]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("OK" if self.ok(allow_missing_paths=allow_missing_paths) else "FAILED")
        return "\n".join(lines)


def _choice(report: Report, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        report.errors.append(f"{key}={value!r} is not one of {', '.join(choices)}")


def _range(report: Report, key: str, value: float, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False) -> None:
    if not math.isfinite(value):  # reported once, as not finite (every comparison with a NaN is false)
        return
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
    _choice(r, "trainer.grpo_singleton", cfg.trainer.grpo_singleton, GRPO_SINGLETON)
    _choice(r, "trainer.lr_schedule", cfg.trainer.lr_schedule, LR_SCHEDULES)
    _choice(r, "trainer.on_nonfinite", cfg.trainer.on_nonfinite, ON_NONFINITE)
    _choice(r, "search.backend", cfg.search.backend, SEARCH_BACKENDS)
    _choice(r, "generation.backend", cfg.generation.backend, GENERATION_BACKENDS)
    _choice(r, "model.dtype", cfg.model.dtype, DTYPES)
    _choice(r, "model.attn_implementation", cfg.model.attn_implementation, ATTN_IMPLEMENTATIONS)
    _choice(r, "model.packed_sequences", cfg.model.packed_sequences, PACKING_MODES)
    _choice(r, "collect.label_rule", cfg.collect.label_rule, LABEL_RULES)
    _choice(r, "collect.judge_api", cfg.collect.judge_api, JUDGE_APIS)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.device):
        r.errors.append(f"device={cfg.device!r} must be cpu, cuda or cuda:N (N >= 0)")
    if cfg.search.backend == "openai" and not cfg.search.base_url:
        r.errors.append("search.backend=openai needs search.base_url (e.g. http://localhost:8000/v1)")


def _floats(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every float value of the config, by dotted key."""
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            out += _floats(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            out.append((f"{prefix}{f.name}", value))
    return out


def _ranges(cfg: RunConfig, r: Report) -> None:
    t, ro, s = cfg.trainer, cfg.rollout, cfg.search
    r.errors += [f"{key}={value} is not a finite number" for key, value in _floats(cfg) if not math.isfinite(value)]
    _range(r, "seed", cfg.seed, 0, MAX_SEED)
    for key, value in (("rollout.max_query_chars", ro.max_query_chars), ("rollout.max_context", ro.max_context)):
        _range(r, key, value, 1)
    _range(r, "data.max_test_examples", cfg.data.max_test_examples, 0)
    for key, value in (("trainer.steps", t.steps), ("trainer.batch_questions", t.batch_questions),
                       ("trainer.ppo_epochs", t.ppo_epochs), ("trainer.mini_batches", t.mini_batches),
                       ("rollout.n_samples", ro.n_samples), ("rollout.max_new_tokens", ro.max_new_tokens),
                       ("search.top_k", s.top_k),
                       ("search.max_new_tokens", s.max_new_tokens), ("search.concurrency", s.concurrency)):
        _range(r, key, value, 1)
    for key, value in (("rollout.max_turns", ro.max_turns), ("trainer.warmup_steps", t.warmup_steps),
                       ("trainer.weight_decay", t.weight_decay), ("trainer.kl_coef", t.kl_coef),
                       ("trainer.entropy_coef", t.entropy_coef),
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
    if t.algo == "grpo" and ro.n_samples < 2 and t.grpo_singleton == "zero":
        r.errors.append("trainer.algo=grpo needs rollout.n_samples >= 2 (a group of one has zero advantage; "
                        "trainer.grpo_singleton=reward trains on the raw reward instead)")


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


def _model_dir(r: Report, key: str, path: str) -> None:
    """A Hugging Face checkpoint: a directory holding config.json (a tokenizer: any directory)."""
    p = Path(path)
    if not p.exists():
        r.missing_paths.append(f"{key}: {path} does not exist")
    elif not p.is_dir():
        r.errors.append(f"{key}: {path} is a file; it must be a Hugging Face checkpoint directory")
    elif key != "model.tokenizer_path" and not (p / "config.json").is_file():
        r.errors.append(f"{key}: {path} holds no config.json (not a Hugging Face checkpoint directory)")


def _data_file(r: Report, key: str, path: str) -> bool:
    p = Path(path)
    if not p.exists():
        r.missing_paths.append(f"{key}: {path} does not exist")
    elif p.is_dir():
        r.errors.append(f"{key}: {path} is a directory; it must be a file")
    else:
        return True
    return False


def _paths(cfg: RunConfig, r: Report, command: str) -> None:
    """The paths the command will read, by backend: a train run never reads data.test_path, and so on. The QA
    data itself is read (not the models): an empty or malformed file, or fewer questions than one batch, fails
    here instead of after the models have loaded."""
    m, d, s = cfg.model, cfg.data, cfg.search
    models = {"model.policy_path": m.policy_path}
    if m.tokenizer_path:
        models["model.tokenizer_path"] = m.tokenizer_path
    if s.backend == "simulator":
        models["model.simulator_path"] = m.simulator_path
    if s.backend == "dense":
        models["search.dense_encoder_path"] = s.dense_encoder_path
    for key, value in models.items():
        if not value:
            r.errors.append(f"{key} is empty")
        else:
            _model_dir(r, key, value)
    if s.backend in ("bm25", "dense"):
        if not d.corpus_path:
            r.errors.append(f"data.corpus_path is empty (search.backend={s.backend} searches it)")
        else:
            _data_file(r, "data.corpus_path", d.corpus_path)
    if s.backend == "retriever" and not s.retriever_url:
        r.errors.append("search.backend=retriever needs search.retriever_url")
    if command == "train":
        _train_data(cfg, r)
    else:
        _test_data(cfg, r)


def _train_data(cfg: RunConfig, r: Report) -> None:
    path, batch = cfg.data.train_path, cfg.trainer.batch_questions
    if not path:
        r.errors.append("data.train_path is empty")
        return
    if not _data_file(r, "data.train_path", path):
        return
    try:
        n = len(load_qa(path))
    except (ValueError, OSError) as exc:
        r.errors.append(f"data.train_path: {exc}")
        return
    if batch > n:
        r.errors.append(f"trainer.batch_questions={batch} is more than the {n} questions in data.train_path "
                        "(a batch would hold a question twice, merging its GRPO groups)")
    r.notes.append(f"data.train_path: {n} questions, {n / max(1, batch):.1f} steps per epoch")


def _test_data(cfg: RunConfig, r: Report) -> None:
    parts = [p.strip() for p in cfg.data.test_path.split(",") if p.strip()]
    if not parts:
        r.errors.append(f"data.test_path={cfg.data.test_path!r} names no test set")
        return
    missing = [p for p in parts if not Path(p).exists()]
    r.missing_paths += [f"data.test_path: {p} does not exist" for p in missing]
    if missing:
        return
    try:
        n = len(load_test_sets(cfg.data.test_path, max_per_source=cfg.data.max_test_examples))
    except (ValueError, OSError) as exc:
        r.errors.append(f"data.test_path: {exc}")
        return
    r.notes.append(f"data.test_path: {n} questions")


def _serve(cfg: RunConfig, r: Report) -> None:
    """The simulator server's limits (`serve.*`), checked the way `simulate --serve` checks them."""
    from zerosearch.search.server.serve import resolve_limits

    try:
        resolve_limits(dataclasses.asdict(cfg.serve))
    except ValueError as e:
        r.errors.append(f"serve.{e}")


def _sft(cfg: RunConfig, r: Report, world_size: int) -> None:
    """`zerosearch sft`'s section: a global batch that splits into micro-batches on every rank, sane ranges."""
    s = cfg.sft
    _choice(r, "sft.lr_schedule", s.lr_schedule, LR_SCHEDULES)
    for key, value in (("sft.steps", s.steps), ("sft.global_batch_size", s.global_batch_size),
                       ("sft.micro_batch_size", s.micro_batch_size), ("sft.max_len", s.max_len)):
        _range(r, key, value, 1)
    for key, value in (("sft.eval_every", s.eval_every), ("sft.save_every", s.save_every),
                       ("sft.warmup_steps", s.warmup_steps)):
        _range(r, key, value, 0)
    _range(r, "sft.lr", s.lr, 0, lo_open=True)
    _range(r, "sft.eval_fraction", s.eval_fraction, 0, 1, hi_open=True)
    per_step = max(1, s.micro_batch_size) * max(1, world_size)
    if s.global_batch_size >= 1 and s.global_batch_size % per_step:
        r.errors.append(f"sft.global_batch_size={s.global_batch_size} is not a multiple of sft.micro_batch_size x "
                        f"world size = {per_step}")


def validate_config(cfg: RunConfig, *, world_size: int = 1, command: str = "train") -> Report:
    """Every check that needs no model, GPU or network. `command` says what the run reads: train (the train
    data, the batch shapes) or eval (the test sets); any other command (toy, sft, simulate) gets the names,
    ranges and out_dir checks, its paths being its own business."""
    report = Report()
    _names(cfg, report)
    _ranges(cfg, report)
    _precision(cfg, report)
    _curriculum(cfg, report)
    _serve(cfg, report)
    if command in ("train", "toy", "reproduce"):
        _batches(cfg, report, world_size)
    if command in ("train", "eval"):
        _paths(cfg, report, command)
    if command == "sft":
        _sft(cfg, report, world_size)
    if command in ("train", "eval", "toy", "sft", "reproduce"):
        problem = dir_problem(cfg.out_dir) if cfg.out_dir else "it is empty"
        if problem:
            report.errors.append(f"out_dir: {problem}")
    return report
