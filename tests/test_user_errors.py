"""A careless or hostile user's config and arguments: each mistake is one line on stderr naming the key, file or
argument, exit code 2, no traceback and nothing written; and `validate` rejects whatever `train` / `eval` would
fail on, before any model loads (every command runs the same checks first).
"""

from __future__ import annotations

import math

import pytest

from zerosearch.cli import main
from zerosearch.config import load_config
from zerosearch.toy.assets import ensure_toy_assets
from zerosearch.validate import validate_config


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return ensure_toy_assets(tmp_path_factory.mktemp("cache"), seed=0, n_entities=24)


@pytest.fixture()
def no_models(monkeypatch):
    """A command that gets as far as loading a model fails the test: rejection must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a rejected config")

    monkeypatch.setattr("zerosearch.build.load_policy", refuse)
    monkeypatch.setattr("zerosearch.build.load_simulator", refuse)


def good(assets, out) -> list[str]:
    """Overrides of a config `train` and `eval` accept (the toy world, BM25 search)."""
    return [f"out_dir={out}", f"model.policy_path={assets.policy_dir}", f"model.tokenizer_path={assets.tokenizer_dir}",
            f"data.train_path={assets.train_path}", f"data.test_path={assets.test_path}",
            f"data.corpus_path={assets.corpus_path}", "search.backend=bm25", "trainer.batch_questions=4"]


def files_under(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


CONFIG_FILES = {
    "broken YAML": ("trainer: [1,\n", "broken.yaml:2"),
    "python tag": ("seed: !!python/object/apply:os.mkdir [PWNED]\n", "python/object/apply"),
    "trainer: null": ("trainer: null\n", "'trainer'"),
    "temperature: null": ("rollout:\n  temperature: null\n", "'rollout.temperature'"),
    "value where a section is": ("trainer:\n  steps: {x: 5}\n", "'trainer.steps'"),
    "number where a path is": ("out_dir: 7\n", "'out_dir'"),
    "not a mapping": ("- 1\n- 2\n", "mapping"),
    "not UTF-8": (b"seed: \xff\xfe\n", "UTF-8"),
}


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_bad_config_file_is_one_line_and_writes_nothing(name, tmp_path, monkeypatch, capsys, assets, no_models):
    text, needle = CONFIG_FILES[name]
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "broken.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = files_under(tmp_path)
    assert main(["train", "--config", str(path), *good(assets, tmp_path / "run")]) == 2
    err = one_line(capsys)
    assert needle in err and "broken.yaml" in err
    assert files_under(tmp_path) == before  # no out_dir, no config.yaml, and the python tag never ran


def test_config_path_that_is_a_directory(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path)]) == 2
    assert "is a directory" in one_line(capsys)


@pytest.mark.parametrize("override, needle", [
    ("trainer.steps=null", "'trainer.steps': expected int"),
    ("trainer.dual_clip=abc", "'trainer.dual_clip': expected a number or null"),
    ("trainer.steps.x=5", "'trainer.steps' is a value, not a section"),
    ("trainer=5", "'trainer' is a section"),
    ("rollout.temperature=", "'rollout.temperature': expected a number"),
    ("generation.cuda_graph=maybe", "'generation.cuda_graph': expected true/false"),
])
def test_bad_override_is_one_line_naming_the_key(override, needle, tmp_path, capsys, assets, no_models):
    assert main(["train", *good(assets, tmp_path / "run"), override]) == 2
    assert needle in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_override_values_are_text_not_yaml(tmp_path):
    """Values YAML would read as an alias, a reserved indicator or a flow separator are plain strings."""
    cfg = load_config(None, ["out_dir=@x", "data.test_path=,", "model.policy_path=*p", "search.model=[a",
                             "trainer.dual_clip=null", "trainer.lr=3e-5", "seed=7"])
    assert (cfg.out_dir, cfg.data.test_path, cfg.model.policy_path, cfg.search.model) == ("@x", ",", "*p", "[a")
    assert cfg.trainer.dual_clip is None and cfg.trainer.lr == 3e-5 and cfg.seed == 7


@pytest.mark.parametrize("command, override, needle", [
    ("eval", "data.test_path=,", "data.test_path"),
    ("train", "model.policy_path=*p", "model.policy_path: *p does not exist"),
])
def test_special_values_that_name_nothing_are_one_line(command, override, needle, tmp_path, capsys, assets,
                                                       no_models):
    assert main([command, *good(assets, tmp_path / "run"), override]) == 2
    assert needle in one_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, needle", [
    (["simulate", "--serve", "--port", "-1"], "--port"),
    (["simulate", "--serve", "--port", "70000"], "--port"),
    (["eval", "--batch-size", "-1"], "--batch-size"),
    (["eval", "--batch-size", "0"], "--batch-size"),
    (["sft", "--pairs", "p.jsonl", "--save", "s", "--lr", "nan"], "--lr"),
    (["train", "--resumee"], "--resumee"),
])
def test_bad_arguments_are_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in one_line(capsys)
    assert files_under(tmp_path) == set()


def test_eval_out_that_is_a_directory(tmp_path, capsys, assets, no_models):
    assert main(["eval", *good(assets, tmp_path / "run"), "--out", str(tmp_path)]) == 2
    err = one_line(capsys)
    assert "--out" in err and "is a directory" in err
    assert files_under(tmp_path) == set()


# What train / eval would fail on (or silently do wrong), each caught by validate before a model loads.
REJECTED = [
    ("trainer.lr=nan", "trainer.lr"),
    ("trainer.lr=inf", "trainer.lr"),
    ("rollout.temperature=nan", "rollout.temperature"),
    ("trainer.kl_coef=-inf", "trainer.kl_coef"),
    ("trainer.clip_low=nan", "trainer.clip_low"),
    ("trainer.clip_high=nan", "trainer.clip_high"),
    ("trainer.dual_clip=nan", "trainer.dual_clip"),
    ("curriculum.p_end=nan", "curriculum.p_end"),
    ("seed=-1", "seed"),
    ("device=cuda:-1", "device"),
    ("device=gpu", "device"),
    ("rollout.max_query_chars=0", "rollout.max_query_chars"),
]


@pytest.mark.parametrize("override, needle", REJECTED)
def test_validate_rejects_what_train_would_fail_on(override, needle, tmp_path, capsys, assets, no_models):
    cfg = load_config(None, [*good(assets, tmp_path / "run"), override])
    assert any(needle in e for e in validate_config(cfg).errors), validate_config(cfg).errors
    assert main(["validate", *good(assets, tmp_path / "run"), override]) == 1
    capsys.readouterr()
    assert main(["train", *good(assets, tmp_path / "run"), override]) == 2
    assert needle in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_train_data_is_rejected(tmp_path, capsys, assets, no_models):
    """The batch would repeat questions (two copies of a question merge into one GRPO group)."""
    n = sum(1 for line in assets.train_path.read_text().splitlines() if line.strip())
    for batch, ok in ((n, True), (n + 1, False)):
        cfg = load_config(None, [*good(assets, tmp_path / "run"), f"trainer.batch_questions={batch}"])
        errors = validate_config(cfg).errors
        assert (not any("trainer.batch_questions" in e for e in errors)) == ok, errors
    assert main(["train", *good(assets, tmp_path / "run"), f"trainer.batch_questions={n + 1}"]) == 2
    assert f"more than the {n} questions" in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_the_good_config_passes(tmp_path, assets):
    """The base of every rejection above is itself accepted, by both commands' checks."""
    cfg = load_config(None, good(assets, tmp_path / "run"))
    for command in ("train", "eval"):
        report = validate_config(cfg, command=command)
        assert report.ok(), report.render()
    assert not math.isnan(cfg.trainer.lr)


def _paths(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_dir" / "nested").mkdir()
    return tmp_path / "a_file", tmp_path / "empty.jsonl", tmp_path / "a_dir"


@pytest.mark.parametrize("command, key, which, needle", [
    ("train", "out_dir", "file", "is a file, not a directory"),
    ("train", "out_dir", "under_file", "is a file, so"),
    ("train", "model.policy_path", "file", "is a file"),
    ("train", "model.policy_path", "dir", "no config.json"),
    ("train", "data.train_path", "dir", "is a directory"),
    ("train", "data.train_path", "empty", "no questions"),
    ("train", "data.corpus_path", "dir", "is a directory"),
    ("eval", "data.test_path", "empty", "no questions"),
    ("eval", "model.policy_path", "file", "is a file"),
])
def test_validate_rejects_unusable_paths(command, key, which, needle, tmp_path, capsys, assets, no_models):
    a_file, empty, a_dir = _paths(tmp_path)
    value = {"file": a_file, "empty": empty, "dir": a_dir, "under_file": a_file / "run"}[which]
    overrides = [*good(assets, tmp_path / "run"), f"{key}={value}"]
    report = validate_config(load_config(None, overrides), command=command)
    assert any(e.startswith(key) and needle in e for e in report.errors), report.errors
    before = files_under(tmp_path)
    assert main([command, *overrides]) == 2
    err = one_line(capsys)
    assert key in err and needle in err
    assert files_under(tmp_path) == before
