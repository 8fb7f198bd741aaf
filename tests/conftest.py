"""Test set-up: where the kernel tests run, and Triton's interpreter where they run on the CPU.

``--kernel-device`` (``auto``: ``cuda`` when a GPU is present, else ``cpu``) decides where the kernel tests put
their inputs, through the ``kernel_device`` fixture. On ``cuda`` the Triton kernels are compiled for the GPU
(never interpreted) and the compiled ``_C`` ops run their CUDA kernels; on ``cpu`` Triton runs through its
interpreter. The tests assert the same things either way, against float64 references computed on the CPU.

TRITON_INTERPRET must be set before any kernel module imports triton; ``pytest_configure`` runs before the
test modules are collected (imported), so it is set there. Tests marked ``gpu`` run on ``cuda`` only.
"""

import os

import pytest
import torch

_KERNEL_DEVICE: list[torch.device] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kernel-device", choices=["auto", "cpu", "cuda"], default="auto",
                     help="where kernel tests run: cuda compiles Triton for the GPU; cpu interprets it "
                          "(auto: cuda when available)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--kernel-device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError("--kernel-device cuda, but CUDA is not available")
        if os.environ.get("TRITON_INTERPRET") == "1":
            raise pytest.UsageError("--kernel-device cuda compiles the Triton kernels: unset TRITON_INTERPRET")
    else:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    _KERNEL_DEVICE[:] = [torch.device(name)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _KERNEL_DEVICE[0].type == "cuda":
        return
    skip = pytest.mark.skip(reason="gpu test: needs --kernel-device cuda (a GPU)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kernel_device() -> torch.device:
    """The device kernel tests put their inputs on (``--kernel-device``); compare results on the CPU."""
    return _KERNEL_DEVICE[0]


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
