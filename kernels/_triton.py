"""Optional Triton import shared by the kernel modules: their PyTorch references must stay importable
where Triton is missing, so each module checks HAVE_TRITON before defining its kernels."""

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    HAVE_TRITON = False

__all__ = ["HAVE_TRITON", "tl", "triton"]
