"""Hugging Face checkpoint directories written whole or not at all, and read back only when they load.

`save_pretrained` writes `config.json` before the weights, so a process killed mid-save leaves a directory that
looks finished and fails to load later (`SafetensorError`). Writing into a temporary sibling and renaming it into
place means a reader finds the previous directory, the new one, or none: a stage that trusts "the directory
exists" is then never handed half a model.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from zerosearch.runtime.run_dir import writing

log = logging.getLogger(__name__)


def save_pretrained_atomic(path: str | os.PathLike, *objects) -> Path:
    """`obj.save_pretrained(path)` for each object (a model, its tokenizer), as one atomic directory write."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    try:
        with writing(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            for obj in objects:
                obj.save_pretrained(tmp)
            if final.exists():  # a directory cannot be replaced in one rename: move the old one aside first
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_if_complete(path: str | os.PathLike, loader):
    """`loader(path)`, or None (with a warning) when the directory is missing or does not load: torn or
    truncated weights, a missing or broken config. The caller rebuilds what it would have held."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return None
    try:
        return loader(path)
    except Exception as exc:  # safetensors, json and transformers each raise their own types
        log.warning("%s does not load (%s: %s); rebuilding it", path, type(exc).__name__, str(exc).splitlines()[0])
        return None
