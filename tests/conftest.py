"""Test set-up: Triton runs through its interpreter on machines without CUDA.

TRITON_INTERPRET must be set before any kernel module imports triton, so it is set here, at the top of
the first module pytest imports.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
