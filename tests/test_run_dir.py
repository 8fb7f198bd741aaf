"""A used out_dir never corrupts a new run: `zerosearch train` refuses an out_dir that holds an earlier run's
files unless told `--resume` (continue it, after checking its config) or `--overwrite` (clear exactly the files a
run writes), checkpoint retention never deletes the checkpoints of the run that is writing, `metrics.jsonl` never
mixes two runs, and `zerosearch eval` treats its `--out` file the same way.

`train` runs in process on the toy world's tiny policy with BM25 search and a few tiny steps (seconds each).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from zerosearch.cli import main
from zerosearch.runtime.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from zerosearch.runtime.metrics import read_metrics
from zerosearch.runtime.run_dir import check_resume_config
from zerosearch.toy.assets import ensure_toy_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return ensure_toy_assets(tmp_path_factory.mktemp("cache"), seed=0, n_entities=24)


def train_args(assets, out: Path, *extra: str, steps: int = 2) -> list[str]:
    """The flags in `extra` go before the overrides: argparse takes no overrides after a flag that follows them."""
    flags, overrides = [e for e in extra if e.startswith("--")], [e for e in extra if not e.startswith("--")]
    return ["train", "--quiet", *flags, f"out_dir={out}", f"model.policy_path={assets.policy_dir}",
            f"model.tokenizer_path={assets.tokenizer_dir}", f"data.train_path={assets.train_path}",
            f"data.corpus_path={assets.corpus_path}", "search.backend=bm25", "search.top_k=2",
            "rollout.n_samples=2", "rollout.max_turns=1", "rollout.max_new_tokens=4", "rollout.max_context=256",
            "trainer.batch_questions=2", "trainer.mini_batches=1", "trainer.checkpoint_every=1",
            "trainer.keep_checkpoints=2", "trainer.warmup_steps=1", f"trainer.steps={steps}",
            *overrides]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes: 'nothing was written' is checked against this."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def steps_of(out: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(out / "checkpoints")]


def test_fresh_train_refuses_a_used_out_dir_then_overwrite_starts_clean(assets, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(assets, out, steps=2)) == 0
    assert steps_of(out) == [1, 2]
    capsys.readouterr()
    (out / "notes.txt").write_text("the user's own file")
    before = snapshot(out)

    # A fresh, shorter run into the same directory: refused, one line naming the ways out, nothing touched.
    assert main(train_args(assets, out, steps=1)) == 2
    err = one_line_error(capsys)
    assert "--resume" in err and "--overwrite" in err and str(out) in err
    assert snapshot(out) == before

    # --overwrite clears what a run writes (and only that), then the new run owns the directory.
    assert main(train_args(assets, out, "--overwrite", steps=1)) == 0
    assert steps_of(out) == [1]  # the earlier run's step 2 no longer outranks the new run's checkpoint
    assert load_checkpoint(out / "checkpoints" / "step-00000001")["config"]["trainer"]["steps"] == 1
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0]
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_resume_checks_the_config_and_names_what_differs(assets, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(assets, out, steps=1)) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert main(train_args(assets, out, "--resume", "trainer.lr=0.005", "rollout.temperature=0.7", steps=2)) == 2
    err = one_line_error(capsys)
    assert "trainer.lr" in err and "rollout.temperature" in err and "trainer.steps" in err
    assert "--allow-config-change" in err
    assert snapshot(out) == before  # nothing written, not even config.yaml

    # Told so, the run continues with the new settings from the checkpoint of step 1.
    assert main(train_args(assets, out, "--resume", "--allow-config-change", steps=2)) == 0
    assert steps_of(out) == [1, 2]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1]

    # Where the run lives is not part of what it computes: a moved run resumes as it is.
    moved = tmp_path / "moved"
    out.rename(moved)
    assert main(train_args(assets, moved, "--resume", steps=2)) == 0
    assert [r["step"] for r in read_metrics(moved / "metrics.jsonl")] == [0, 1]


def test_resume_and_overwrite_together_is_an_error(assets, tmp_path, capsys):
    assert main(train_args(assets, tmp_path / "run", "--resume", "--overwrite")) == 2
    assert "--resume" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_retention_never_deletes_the_checkpoint_just_written(tmp_path):
    """A run that writes step 1 into a directory holding steps 5 and 6 of another (longer) run: the steps above
    the one written belong to a history this run has left, so they go and the new checkpoint stays."""
    for step in (5, 6):
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.zeros(1)}, keep=2)
    save_checkpoint(tmp_path, 1, {"step": 1, "w": torch.ones(1)}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    save_checkpoint(tmp_path, 2, {"step": 2, "w": torch.ones(1)}, keep=2)
    save_checkpoint(tmp_path, 3, {"step": 3, "w": torch.ones(1)}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]


def test_fresh_eval_refuses_an_existing_out_file(assets, tmp_path, capsys):
    out = tmp_path / "eval.jsonl"
    args = ["eval", "--quiet", "--batch-size", "4", "--out", str(out), f"model.policy_path={assets.policy_dir}",
            f"model.tokenizer_path={assets.tokenizer_dir}", f"data.test_path={assets.test_path}",
            f"data.corpus_path={assets.corpus_path}", "data.max_test_examples=3", "search.backend=bm25",
            "rollout.max_turns=1", "rollout.max_new_tokens=4", f"out_dir={tmp_path}"]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main(args) == 2
    err = one_line_error(capsys)
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before
    assert main([*args, "--overwrite"]) == 0
    assert [json.loads(line)["uid"] for line in out.read_text().splitlines()] == [r["uid"] for r in rows]


def test_config_check_compares_the_keys_both_configs_have(caplog):
    saved = {"seed": 0, "out_dir": "a", "trainer": {"lr": 1e-4, "steps": 3}}
    same_but_moved = {"seed": 0, "out_dir": "b", "trainer": {"lr": 1e-4, "steps": 3, "new_key": 1}}
    assert check_resume_config("ckpt", saved, same_but_moved, allow_change=False) == []
    changed = {"seed": 1, "out_dir": "a", "trainer": {"lr": 1e-4, "steps": 4}}
    with pytest.raises(ValueError, match=r"another config \(seed: 0 -> 1; trainer.steps: 3 -> 4\)"):
        check_resume_config("ckpt", saved, changed, allow_change=False)
    assert check_resume_config("ckpt", saved, changed, allow_change=True) == ["seed: 0 -> 1", "trainer.steps: 3 -> 4"]
    with caplog.at_level("WARNING"):  # a checkpoint that does not record its config: resumed, with a warning
        assert check_resume_config("ckpt", None, changed, allow_change=False) == []
    assert "cannot check" in caplog.text
