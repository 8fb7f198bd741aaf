"""Materialise the toy world on disk: world json, tokenizer, untrained tiny models, corpus, QA splits.

Everything is written into a temporary sibling directory and renamed into place at the end, with a
manifest written last, so a crash never leaves a half-built asset directory that a later run would
trust. A complete directory is reused as is (nothing rewritten); an incomplete one is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zerosearch.data.qa import save_qa
from zerosearch.toy.models import init_model, tiny_qwen2_config
from zerosearch.toy.tokenizer import build_tokenizer, load_tokenizer
from zerosearch.toy.trajectories import vocabulary_texts
from zerosearch.toy.world import ToyWorld, build_world

ASSET_VERSION = 3
DEFAULT_N_ENTITIES = 240


@dataclass
class ToyAssets:
    """Paths of one generated toy world."""

    root: Path
    world_path: Path
    tokenizer_dir: Path
    policy_dir: Path
    simulator_dir: Path
    corpus_path: Path
    train_path: Path
    test_path: Path

    @classmethod
    def at(cls, root: Path) -> ToyAssets:
        return cls(
            root=root,
            world_path=root / "world.json",
            tokenizer_dir=root / "tokenizer",
            policy_dir=root / "policy",
            simulator_dir=root / "simulator",
            corpus_path=root / "corpus.jsonl",
            train_path=root / "train.jsonl",
            test_path=root / "test.jsonl",
        )

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def required_files(self) -> list[Path]:
        files = [self.world_path, self.corpus_path, self.train_path, self.test_path, self.manifest_path]
        files.append(self.tokenizer_dir / "tokenizer.json")
        for model_dir in (self.policy_dir, self.simulator_dir):
            files += [model_dir / "config.json", model_dir / "model.safetensors"]
        return files

    def load_world(self) -> ToyWorld:
        return ToyWorld.load(self.world_path)

    def load_tokenizer(self):
        return load_tokenizer(str(self.tokenizer_dir))


def _manifest(seed: int, n_entities: int) -> dict:
    return {"version": ASSET_VERSION, "seed": seed, "n_entities": n_entities}


def _is_complete(assets: ToyAssets, seed: int, n_entities: int) -> bool:
    if not all(p.is_file() for p in assets.required_files()):
        return False
    try:
        return json.loads(assets.manifest_path.read_text()) == _manifest(seed, n_entities)
    except (OSError, ValueError):
        return False


def _write_all(assets: ToyAssets, seed: int, n_entities: int) -> None:
    world = build_world(seed=seed, n_entities=n_entities)
    world.save(assets.world_path)
    with assets.corpus_path.open("w", encoding="utf-8") as f:
        for i, text in enumerate(world.passages):
            f.write(json.dumps({"id": str(i), "contents": text}) + "\n")
    save_qa(world.train, assets.train_path)
    save_qa(world.test, assets.test_path)

    tok = build_tokenizer([*world.texts(), *vocabulary_texts()])
    tok.save_pretrained(str(assets.tokenizer_dir))
    for role, model_dir, offset in (("policy", assets.policy_dir, 1), ("simulator", assets.simulator_dir, 2)):
        model = init_model(tiny_qwen2_config(len(tok), role=role), seed=seed * 1009 + offset)
        model.save_pretrained(str(model_dir), safe_serialization=True)
        tok.save_pretrained(str(model_dir))  # each model dir is self-contained, like a real checkpoint
    assets.manifest_path.write_text(json.dumps(_manifest(seed, n_entities)))  # last: marks completion


def ensure_toy_assets(cache_dir: str | os.PathLike, seed: int = 0, n_entities: int = DEFAULT_N_ENTITIES) -> ToyAssets:
    """Return the assets for (seed, n_entities) under `cache_dir`, generating them if absent."""
    cache_dir = Path(cache_dir)
    name = f"toy-seed{seed}" if n_entities == DEFAULT_N_ENTITIES else f"toy-seed{seed}-n{n_entities}"
    assets = ToyAssets.at(cache_dir / name)
    if _is_complete(assets, seed, n_entities):
        return assets

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final directory should be readable like any other
    try:
        _write_all(ToyAssets.at(tmp), seed, n_entities)
        if assets.root.exists():  # incomplete leftover: move aside, then delete
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=cache_dir))
            os.replace(assets.root, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, assets.root)
        except OSError:
            if not _is_complete(assets, seed, n_entities):  # lost a race to a broken writer
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return assets
