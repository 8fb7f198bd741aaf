"""The one loader of the compiled extension ``zerosearch._C``.

Importing ``zerosearch._C`` registers its ops under ``torch.ops.zerosearch``. The extension is optional at
run time (a source checkout that was never built still works through the Python references), so every op
asks here whether its compiled kernel exists instead of importing the extension itself.
"""

from __future__ import annotations

import warnings

import torch

_STATE: dict[str, bool] = {}


def _loaded() -> bool:
    if "loaded" not in _STATE:
        try:
            import zerosearch._C  # noqa: F401  (the import registers the ops)

            _STATE["loaded"] = True
        except ImportError:
            _STATE["loaded"] = False
    return _STATE["loaded"]


def has_compiled_op(name: str) -> bool:
    """Whether ``torch.ops.zerosearch.<name>`` was registered by the compiled extension."""
    return _loaded() and hasattr(torch.ops.zerosearch, name)


def compiled_op(name: str):
    """``torch.ops.zerosearch.<name>``, or None (with a one-time warning per op) when it is not built."""
    if has_compiled_op(name):
        return getattr(torch.ops.zerosearch, name)
    if not _STATE.get(f"warned:{name}"):
        _STATE[f"warned:{name}"] = True
        warnings.warn(
            f"zerosearch._C is not built; {name} uses the slow Python reference "
            "(build with `pip install --no-build-isolation -e .`)",
            RuntimeWarning,
            stacklevel=3,
        )
    return None
