"""What every kernel module shares: the optional Triton import and two launch helpers.

The PyTorch references beside each kernel must stay importable where Triton is missing, so each module
checks ``HAVE_TRITON`` before defining its kernels.
"""

import os

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    HAVE_TRITON = False


def interpreting() -> bool:
    """Whether Triton runs through its CPU interpreter (tests on machines without a GPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def next_pow2(x: int) -> int:
    """Smallest power of two >= x (1 for x <= 1); tile sizes must be powers of two."""
    return 1 << max(0, int(x) - 1).bit_length()


__all__ = ["HAVE_TRITON", "interpreting", "next_pow2", "tl", "triton"]
