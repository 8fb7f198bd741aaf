"""`zerosearch reproduce`: the variants differ from the ZeroSearch run only where named (checked on the configs the
run saves), every variant trains and is evaluated in --smoke, the table is written, and a killed (variant, seed)
resumes where it stopped while finished ones are left alone."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from zerosearch.cli import TOY_CONFIG, main
from zerosearch.config import config_to_dict, load_config
from zerosearch.reproduce.variants import (
    NOISE_MEAN,
    UNTRAINED_SIMULATOR,
    VARIANT_NAMES,
    VARIANTS,
    ZEROSEARCH,
    seed_base,
    variant_config,
)
from zerosearch.runtime.metrics import read_metrics
from zerosearch.runtime.run_dir import flat
from zerosearch.toy.assets import ToyAssets

TIMING_KEYS = {"rollout_s", "step_s"}


def _differing(a: dict, b: dict) -> set[str]:
    fa, fb = flat(a), flat(b)
    assert set(fa) == set(fb)
    return {k for k in fa if fa[k] != fb[k]}


def _curriculum_mean(steps: int, p_start: float, p_end: float, base: float) -> float:
    """Independent of zerosearch.search.curriculum: the paper's formula, averaged over the steps."""
    return sum(p_start + (base ** (i / steps) - 1) / (base - 1) * (p_end - p_start) for i in range(steps)) / steps


def test_variants_are_the_base_with_their_named_overrides(tmp_path):
    cfg = load_config(TOY_CONFIG, ["trainer.steps=17"])
    assets = ToyAssets.at(tmp_path / "assets")
    base = seed_base(cfg, 3, assets, tmp_path / "seed3")
    assert base.seed == 3 and base.data.corpus_path == str(assets.corpus_path)
    assert base.out_dir == str(tmp_path / "seed3" / ZEROSEARCH)
    for v in VARIANTS:
        vc = variant_config(v, base, assets, tmp_path / "seed3")
        assert vc.out_dir == str(tmp_path / "seed3" / v.name)
        changed = _differing(config_to_dict(base), config_to_dict(vc)) - {"out_dir"}
        assert changed == set(v.overrides), v.name  # every named key changes, nothing else does
        values = flat(config_to_dict(vc))
        assert NOISE_MEAN not in values.values() and UNTRAINED_SIMULATOR not in values.values()
    constant = variant_config(next(v for v in VARIANTS if v.name == "constant-noise"), base, assets, tmp_path)
    want = _curriculum_mean(17, cfg.curriculum.p_start, cfg.curriculum.p_end, cfg.curriculum.base)
    assert constant.curriculum.p_start == constant.curriculum.p_end == pytest.approx(want, abs=1e-6)
    assert 0.0 < want < cfg.curriculum.p_end
    prompt_only = variant_config(next(v for v in VARIANTS if v.name == "prompt-only-sim"), base, assets, tmp_path)
    assert prompt_only.model.simulator_path == str(assets.simulator_dir) != base.model.simulator_path


@pytest.mark.slow
def test_smoke_table_configs_and_resume(tmp_path, capsys):
    out = tmp_path / "table"
    args = ["reproduce", "--smoke", "--quiet", f"out_dir={out}", f"cache_dir={tmp_path / 'cache'}"]
    assert main(args) == 0
    seed_dir = out / "seed0"

    # the table: one row per variant, every one of them finished for the one smoke seed
    summary = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in summary["variants"]] == list(VARIANT_NAMES)
    assert (
        all(r["seeds"] == [0] for r in summary["variants"])
        and summary["finished"] == f"{len(VARIANTS)}/{len(VARIANTS)}"
    )
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in VARIANT_NAMES)
    assert (out / "training.png").stat().st_size > 0

    # from the saved configs: each variant is the ZeroSearch config except exactly where it is named
    configs = {v.name: yaml.safe_load((seed_dir / v.name / "config.yaml").read_text()) for v in VARIANTS}
    ref = configs[ZEROSEARCH]
    for v in VARIANTS:
        assert _differing(ref, configs[v.name]) - {"out_dir"} == set(v.overrides), v.name
    steps = ref["trainer"]["steps"]
    per_step = ref["trainer"]["batch_questions"] * ref["rollout"]["n_samples"]
    n_test = summary["n_test"]
    for v in VARIANTS:
        result = json.loads((seed_dir / v.name / "result.json").read_text())
        assert result["n_test"] == n_test
        if v.name != ZEROSEARCH:  # the toy pipeline keeps its own evaluation files
            assert len((seed_dir / v.name / "eval.jsonl").read_text().splitlines()) == n_test
        if not v.train:
            assert not (seed_dir / v.name / "metrics.jsonl").exists()
            continue
        rows = read_metrics(seed_dir / v.name / "metrics.jsonl")
        assert [r["step"] for r in rows] == list(range(steps)), v.name
        sent = round(sum(r["searches"] for r in rows) * per_step)
        backend = configs[v.name]["search"]["backend"]
        assert result["train_queries"] == {
            "simulator": sent if backend == "simulator" else 0,
            "real": sent if backend == "bm25" else 0,
        }

    # a fresh run on the used out_dir is refused, in one line, writing nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume" in err and len(err.splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before

    # kill PPO after its first step: the resumed run redoes exactly the lost step and nothing else
    ppo = seed_dir / "ppo"
    original = read_metrics(ppo / "metrics.jsonl")
    for name in ("result.json", "eval.jsonl"):
        (ppo / name).unlink()
    shutil.rmtree(ppo / "checkpoints" / f"step-{steps:08d}")
    assert main([*args, "--resume"]) == 0
    resumed = read_metrics(ppo / "metrics.jsonl")
    assert [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in resumed] == [
        {k: v for k, v in r.items() if k not in TIMING_KEYS} for r in original
    ]
    assert (ppo / "result.json").is_file()
    untouched = [p for p in before if p.name == "result.json" and p.parent.name != "ppo"]
    assert untouched and all(p.stat().st_mtime_ns == before[p] for p in untouched)

    # --resume with other settings is refused before anything runs
    assert main([*args, "--resume", "trainer.lr=1e-3"]) == 2
    assert "trainer.lr" in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, capsys):
    base = ["reproduce", "--smoke", f"out_dir={tmp_path / 'o'}", f"cache_dir={tmp_path / 'c'}"]
    for extra, needle in (
        (["--seeds", "0,x"], "--seeds"),
        (["--variants", "zerosearch,nope"], "nope"),
        (["--resume", "--overwrite"], "contradict"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
