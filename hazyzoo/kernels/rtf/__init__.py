"""RTF (rational transfer function) SSM ops: state-free kernel generation, FFT convolutions
and the exact companion-form recurrence. :mod:`.reference` is the spec (plain PyTorch)."""

from hazyzoo.kernels.rtf.reference import (
    CONSTRAINTS,
    CONVENTIONS,
    bidirectional_conv,
    bidirectional_conv_reference,
    causal_conv,
    companion_matrix,
    constrain_denominator,
    exact_realization,
    fft_size,
    kernel_from_realization,
    numerator_coefficients,
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
    "companion_matrix",
    "constrain_denominator",
    "exact_realization",
    "fft_size",
    "kernel_from_realization",
    "numerator_coefficients",
    "reference_corrected_numerator",
    "reference_step_kernel",
    "rtf_kernel",
    "share_denominators",
]
