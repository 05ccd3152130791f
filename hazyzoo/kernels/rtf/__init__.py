"""RTF (rational transfer function) SSM ops: state-free kernel generation, FFT convolutions
and the exact companion-form recurrence. :mod:`.reference` is the spec (plain PyTorch).

Kernel generation and the convolutions are torch.fft (cuFFT on the GPU: one rFFT of the
coefficients per kernel, and the convolution's transforms). The one registered fast op is the
recurrent decode step, :func:`rtf_step` (Triton in :mod:`.recurrent`).
"""

import torch
from torch import Tensor

from hazyzoo.kernels._utils import check_float, check_rank, check_same_device, check_shape
from hazyzoo.kernels.dispatch import ExampleInputs, call_op, register_op, triton_available
from hazyzoo.kernels.rtf.reference import (
    CONSTRAINTS,
    CONVENTIONS,
    bidirectional_conv,
    bidirectional_conv_reference,
    causal_conv,
    causal_conv_direct,
    companion_matrix,
    constrain_denominator,
    exact_realization,
    fft_conv,
    fft_size,
    free_response,
    kernel_from_realization,
    numerator_coefficients,
    periodic_inverse,
    prefill_state,
    recurrent_realization,
    recurrent_step_reference,
    reference_corrected_numerator,
    reference_step_kernel,
    rtf_kernel,
    share_denominators,
)

__all__ = [
    "CONSTRAINTS",
    "CONVENTIONS",
    "bidirectional_conv",
    "bidirectional_conv_reference",
    "causal_conv",
    "causal_conv_direct",
    "companion_matrix",
    "constrain_denominator",
    "exact_realization",
    "fft_conv",
    "fft_size",
    "free_response",
    "kernel_from_realization",
    "numerator_coefficients",
    "periodic_inverse",
    "prefill_state",
    "recurrent_realization",
    "recurrent_step_reference",
    "reference_corrected_numerator",
    "reference_step_kernel",
    "rtf_kernel",
    "rtf_step",
    "share_denominators",
]

if triton_available():
    from hazyzoo.kernels.rtf.recurrent import rtf_step_triton
else:
    rtf_step_triton = None


def rtf_step(
    u: Tensor, state: Tensor, decay: Tensor, input: Tensor, readout: Tensor, direct: Tensor
) -> Tensor:
    """One recurrent step ``y = d u + c . z``, ``z <- A z + v u`` of every channel, in place.

    Args:
        u: ``[B, C]`` inputs (float32 / bfloat16 / float16).
        state: ``[B, N, C]`` float32, contiguous: ``z_t``, overwritten with ``z_{t+1}``.
        decay, input, readout: ``[N, C]`` float32, contiguous: the denominators ``a``, the
            input vector ``v`` and the readout ``c`` (state-major, like the state).
        direct: ``[C]`` float32: the direct term ``d``.

    Returns:
        ``y [B, C]`` in ``u.dtype``. Triton on CUDA tensors, the reference elsewhere.
    """
    check_float("u", u)
    check_rank("u", u, 2, "[B, C]")
    check_rank("state", state, 3, "[B, N, C]")
    batch, channels = u.shape
    n_state = state.shape[1]
    check_shape("state", state, (batch, n_state, channels), "[B, N, C]")
    for name, t in (("decay", decay), ("input", input), ("readout", readout)):
        check_shape(name, t, (n_state, channels), "[N, C]")
    check_shape("direct", direct, (channels,), "[C]")
    for name, t in (
        ("state", state),
        ("decay", decay),
        ("input", input),
        ("readout", readout),
        ("direct", direct),
    ):
        check_float(name, t, (torch.float32,))
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if u.stride(-1) != 1:
        raise ValueError("u must have a contiguous last dim")
    check_same_device(u=u, state=state, decay=decay, input=input, readout=readout, direct=direct)
    return call_op("rtf_step", (u, state), u, state, decay, input, readout, direct)


def _example_inputs() -> ExampleInputs:
    """A stable order-5 recurrence over 7 channels, batch 3, random state."""
    gen = torch.Generator().manual_seed(0)
    n, c = 5, 7
    return (
        (
            torch.randn(3, c, generator=gen),
            torch.randn(3, n, c, generator=gen),
            (torch.rand(n, c, generator=gen) - 0.5) / n,
            torch.randn(n, c, generator=gen),
            torch.randn(n, c, generator=gen),
            torch.randn(c, generator=gen),
        ),
        {},
    )


register_op(
    "rtf_step",
    entry=rtf_step,
    reference=recurrent_step_reference,
    triton=rtf_step_triton,
    example_inputs=_example_inputs,
)
