"""Fast ops: a Triton kernel and a PyTorch reference each, picked by :mod:`.dispatch`.

One package per op (``attention/``, ``blockdiag/``, ``linear_attention/``, ``rms_norm/``,
``rtf/``, ``selective_scan/``, ``nearest_code/``), laid
out as flash-linear-attention lays out ``fla/ops/<op>/``. Importing this package registers
every op with the registry in :mod:`.dispatch`.
"""

from hazyzoo.kernels import (
    attention,
    blockdiag,
    dispatch,
    linear_attention,
    nearest_code,
    rms_norm,
    rtf,
    selective_scan,
)

__all__ = [
    "attention",
    "blockdiag",
    "dispatch",
    "linear_attention",
    "nearest_code",
    "rms_norm",
    "rtf",
    "selective_scan",
]
