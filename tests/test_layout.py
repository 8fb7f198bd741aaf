"""The package's shape, checked: layers import only downwards, no module cites a file outside the repository,
no product module grows past one job's size, and every op has its test and benchmark under one stem."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "zerosearch"

# package (or top-level module) -> zerosearch packages/modules it must never import, at any depth
FORBIDDEN = {
    "runtime": {"ops", "engine", "generation", "rollout", "rl", "search", "eval", "toy", "hf", "build", "cli",
                "commands"},
    "ops": {"engine", "generation", "rollout", "search", "eval", "toy", "hf", "runtime", "build", "cli", "commands",
            "rl.trainer", "rl.forward", "rl.sft"},
    "engine": {"generation", "rollout", "rl", "search", "eval", "toy", "hf", "build", "cli", "commands"},
    "generation": {"rollout", "rl", "search", "eval", "toy", "build", "cli", "commands"},
    "search": {"rollout", "rl", "eval", "toy", "build", "cli", "commands"},
    "hf": {"rl", "search", "generation", "eval", "toy", "build", "cli", "commands"},
    "rollout": {"rl", "eval", "toy", "build", "cli", "commands"},
    "rl": {"eval", "toy", "build", "cli", "commands"},
    "eval": {"rl", "toy", "build", "cli", "commands"},
    "data": {"ops", "engine", "generation", "rollout", "rl", "search", "eval", "toy", "hf", "runtime", "build", "cli",
             "commands"},
    "collect": {"eval", "toy", "reproduce", "build", "cli", "commands", "rl.trainer", "rl.sft_trainer"},
    "toy": {"cli", "commands", "reproduce"},
    "reproduce": {"cli", "commands"},
    "build": {"cli", "commands"},
    "config": {"ops", "engine", "generation", "rollout", "rl", "search", "eval", "toy", "hf", "runtime", "build",
               "cli", "commands"},
    "reward": {"ops", "engine", "generation", "rollout", "rl", "search", "eval", "toy", "hf", "runtime", "build",
               "cli", "commands"},
}
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every `zerosearch.x.y` a module imports (relative imports resolved), at any depth in the file."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return {n for n in found if n.startswith("zerosearch.")}


def _layer(path: Path) -> str:
    parts = path.relative_to(PKG).with_suffix("").parts
    return parts[0]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path):
    banned = FORBIDDEN.get(_layer(path), set())
    bad = sorted(n for n in _imports(path)
                 if any(n == f"zerosearch.{b}" or n.startswith(f"zerosearch.{b}.") for b in banned))
    assert not bad, f"{path.relative_to(ROOT)} imports from a higher layer: {bad}"


def test_every_module_has_a_layer_rule():
    layers = {_layer(p) for p in _modules()} - {"__init__", "kernels", "_C", "algos", "validate", "cli", "commands"}
    assert layers <= set(FORBIDDEN), f"add layering rules for {sorted(layers - set(FORBIDDEN))}"


def test_no_citation_of_files_outside_the_repository():
    cited = [str(p.relative_to(ROOT)) for d in ("zerosearch", "kernels", "csrc", "benchmarks", "docs")
             for p in (ROOT / d).rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".cpp", ".cu", ".h", ".sh"}
             and "DESIGN §" in p.read_text(errors="ignore")]  # fmt: skip
    assert not cited, f"cite docs/ instead of an outside brief: {cited}"


def test_product_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in [*_modules(), *(ROOT / "kernels").glob("*.py")]
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines do more than one job: {big}"


def test_each_kernel_has_a_test_and_a_benchmark_under_its_stem():
    for kernel in (ROOT / "kernels").glob("*.py"):
        if kernel.stem.startswith("_"):
            continue
        tests = [p for p in (ROOT / "tests").glob("test_*.py") if kernel.stem in p.read_text()]
        benches = [p for p in (ROOT / "benchmarks").glob("bench_*.py") if kernel.stem in p.read_text()]
        assert tests and benches, f"kernels/{kernel.name} needs a test and a benchmark naming it"
