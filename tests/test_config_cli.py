"""Config loading/overrides, the CLI surface, and the README ↔ CI command contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zerosearch.cli import TOY_CONFIG, build_parser, main
from zerosearch.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_are_typed_and_nested(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("trainer:\n  steps: 7\n  lr: 1.0e-5\nrollout:\n  n_samples: 3\n")
    cfg = load_config(cfg_file, ["trainer.lr=3e-4", "trainer.dual_clip=3", "search.answer_in_noisy=true"])
    assert (cfg.trainer.steps, cfg.trainer.lr, cfg.rollout.n_samples) == (7, 3e-4, 3)
    assert cfg.trainer.dual_clip == 3 and cfg.search.answer_in_noisy is True
    assert RunConfig().trainer.steps != 7  # defaults untouched by a loaded config


@pytest.mark.parametrize("override, message", [
    ("trainer.lrr=1", "unknown config key 'trainer.lrr'"),
    ("trainer.steps=many", "expected int"),
    ("trainer.lr=fast", "expected a number"),
    ("search.answer_in_noisy=3", "expected true/false"),
    ("steps", "must look like key.sub=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, [override])


def test_toy_config_file_loads():
    cfg = load_config(TOY_CONFIG)
    assert cfg.trainer.algo == "grpo" and cfg.search.backend == "simulator"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("toy", "train", "eval", "sft", "simulate"):
        assert cmd in out


def test_cli_reports_config_errors_with_exit_code_2(capsys):
    assert main(["eval", "trainer.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err


def test_cli_reports_missing_model_path(capsys, tmp_path):
    test = tmp_path / "test.jsonl"
    test.write_text('{"question": "q ?", "golden_answers": ["a"], "data_source": "x"}\n')
    assert main(["eval", f"model.policy_path={tmp_path / 'missing'}", f"data.test_path={test}",
                 f"out_dir={tmp_path}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_reports_missing_test_data(capsys, tmp_path):
    assert main(["eval", f"out_dir={tmp_path}"]) == 2
    assert "data.test_path" in capsys.readouterr().err


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines


def test_overrides_may_follow_a_flag(capsys, tmp_path):
    """`validate out_dir=x --allow-missing-paths trainer.steps=7`: both overrides apply, a stray word does not."""
    main(["validate", f"out_dir={tmp_path}", "--allow-missing-paths", "trainer.steps=7"])  # empty paths: FAILED
    assert "step 6 →" in capsys.readouterr().out  # but trainer.steps=7 applied: the curriculum note ends at step 6
    with pytest.raises(SystemExit) as exc:
        main(["validate", f"out_dir={tmp_path}", "--allow-missing-paths", "--bogus"])
    assert exc.value.code == 2 and "--bogus" in capsys.readouterr().err
