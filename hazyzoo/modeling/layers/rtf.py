"""RTF: the rational-transfer-function SSM filter and the ``rtf`` sequence mixer.

:class:`RtfFilter` is the long filter itself (the reference's ``RTF`` module, parameters under
its names ``ab``, ``h_0``, ``scalar``): per-channel transfer functions ``h0 + B(z) / A(z)``,
the state-free kernel (one rFFT of the coefficients), the FFT convolution (causal or
bidirectional) and an exact recurrent mode. Any mixer that wants an RTF long convolution
(MAD's Hyena-RTF, an H3-style operator) composes it. :class:`RtfMixer` is the reference's LRA
block around it: RTF convolution -> activation -> dropout -> output linear (+ GLU).

Modes, chosen per call from the cache layer:

* no cache: the convolution by FFT (training, scoring, the bidirectional encoders);
* a fresh cache: the same convolution, plus the state after the prompt from one more FFT
  convolution (:func:`~hazyzoo.kernels.rtf.prefill_state`);
* one token on a cache: one recurrent step (Triton on CUDA), in place;
* several tokens on a cache: the convolution of the new tokens plus the state's free
  response, then the state advanced by ``A^L`` (exact; no stepping).

The recurrence is exact: its impulse response is the convolution kernel on the whole FFT grid
(the truncation correction is solved once per weight update and cached). Past ``trunc_len``
positions decoding simply continues the recurrence.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig
from transformers import initialization as hf_init

from hazyzoo.configuration.configuration_rtf import (
    RTF_CONSTRAINTS,
    RTF_CONVENTIONS,
    RTF_INITS,
    RtfConfig,
)
from hazyzoo.kernels import rtf as ops
from hazyzoo.modeling.cache import SsmStateLayer
from hazyzoo.modeling.layers.registry import register_sequence_mixer

# Up to this length a causal convolution on CUDA runs as cuDNN's direct depthwise convolution,
# which beats the FFT there (H200, B 16 x 768 channels: 0.054 vs 0.099 ms at 64 taps, equal at
# 128; benchmarks/RESULTS.md).
DIRECT_CONV_MAX_LENGTH = 64


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The causal convolution by the faster route: direct on CUDA for short kernels, else FFT."""
    if u.is_cuda and u.shape[1] <= DIRECT_CONV_MAX_LENGTH:
        return ops.causal_conv_direct(u, k)
    return ops.causal_conv(u, k)


_ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}


class RtfFilter(nn.Module):
    """Per-channel rational transfer functions ``H(z) = h0 + B(z) / A(z)`` of order N.

    Parameters (the reference's names and layout): ``ab`` ``[r * (num_a + channels), N]``
    (first the ``r * num_a`` raw denominators, then the ``r * channels`` numerators; ``r = 2``
    when bidirectional, causal rows first), ``h_0`` ``[r * channels]``, and with
    ``constraint="l1_montel"`` ``scalar`` ``[r * num_a]``. Input and output ``[batch, length,
    channels]``; ``length <= trunc_len`` per call.
    """

    def __init__(
        self,
        channels: int,
        state_size: int,
        trunc_len: int,
        num_a: int | None = None,
        bidirectional: bool = False,
        init: str = "zeros",
        constraint: str = "no",
        convention: str = "rtf",
        kernel_dropout: float = 0.0,
        reference_recurrence: bool = False,
    ) -> None:
        super().__init__()
        if trunc_len <= state_size:
            raise ValueError(
                f"trunc_len ({trunc_len}) must be larger than state_size ({state_size})"
            )
        num_a = channels if num_a is None else num_a
        if channels % num_a:
            raise ValueError(f"channels ({channels}) must be divisible by num_a ({num_a})")
        for name, value, allowed in (
            ("init", init, RTF_INITS),
            ("constraint", constraint, RTF_CONSTRAINTS),
            ("convention", convention, RTF_CONVENTIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if bidirectional and reference_recurrence:
            raise ValueError("reference_recurrence needs a causal filter (bidirectional=False)")
        self.channels = channels
        self.state_size = state_size
        self.trunc_len = trunc_len
        self.num_a = num_a
        self.bidirectional = bidirectional
        self.init = init
        self.constraint = constraint
        self.convention = convention
        self.reference_recurrence = reference_recurrence
        self.directions = 2 if bidirectional else 1
        rows = self.directions * (num_a + channels)
        self.ab = nn.Parameter(torch.empty(rows, state_size))
        self.h_0 = nn.Parameter(torch.empty(self.directions * channels))
        if constraint == "l1_montel":
            self.scalar = nn.Parameter(torch.empty(self.directions * num_a))
        else:
            self.register_parameter("scalar", None)
        self.kernel_dropout = nn.Dropout(kernel_dropout)
        self._realization: dict[str, torch.Tensor] | None = None
        self._realization_key: tuple | None = None
        self.reset_parameters()

    # --- parameters ------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """The reference's init: ``ab`` by ``init``, ``h_0 ~ N(0, 1)``, ``scalar ~ U(0, 1)``."""
        self._init_hazy_weights(None)

    def _init_hazy_weights(self, config: PreTrainedConfig | None) -> None:
        bound = {"zeros": 0.0, "xavier": 1 / math.sqrt(self.state_size)}.get(
            self.init, 1 / self.state_size
        )
        if bound:
            hf_init.uniform_(self.ab, -bound, bound)
        else:
            hf_init.zeros_(self.ab)
        hf_init.normal_(self.h_0, 0.0, 1.0)
        if self.scalar is not None:
            hf_init.uniform_(self.scalar, 0.0, 1.0)

    @property
    def a_rows(self) -> int:
        return self.directions * self.num_a

    def denominators(self) -> torch.Tensor:
        """``a [r * num_a, N]``: the denominators after the constraint."""
        return ops.constrain_denominator(self.ab[: self.a_rows], self.constraint, self.scalar)

    def numerators(self) -> torch.Tensor:
        """``b [r * channels, N]`` (coefficients of ``z^-1 .. z^-N``)."""
        return self.ab[self.a_rows :]

    def kernel(self, length: int) -> torch.Tensor:
        """The time-domain kernels ``[r * channels, length]`` (``length <= fft_size(trunc_len)``;
        causal rows first), from one rFFT of the coefficients."""
        return ops.rtf_kernel(
            self.denominators().float(),
            self.numerators().float(),
            self.h_0.float(),
            self.trunc_len,
            length,
            self.convention,
        )

    # --- convolution mode ------------------------------------------------------------------
    def _check_length(self, length: int) -> None:
        if length > self.trunc_len:
            raise ValueError(
                f"the input has {length} positions but trunc_len is {self.trunc_len}: one call "
                "reads at most trunc_len tokens (the kernel's FFT grid). Build the model with a "
                "larger trunc_len, or continue a cache in chunks (generate's prefill_chunk_size)"
            )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """The convolution of ``u [B, L, channels]`` (causal, or bidirectional)."""
        length = u.shape[1]
        self._check_length(length)
        k = self.kernel_dropout(self.kernel(length))
        x = u.float()
        if self.bidirectional:
            y = ops.bidirectional_conv(x, k[: self.channels], k[self.channels :])
        else:
            y = causal_conv(x, k)
        return y.to(u.dtype)

    # --- recurrent mode --------------------------------------------------------------------
    def _parameter_key(self) -> tuple:
        params = [p for p in (self.ab, self.h_0, self.scalar) if p is not None]
        return tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in params)

    @torch.no_grad()
    def realization(self) -> dict[str, torch.Tensor]:
        """The recurrence ``y = d u + c . z``, ``z <- A z + v u`` (see
        :func:`~hazyzoo.kernels.rtf.recurrent_realization`), solved in float64 once per weight
        update and cached (keyed on the parameters' storage and version counters, so an
        optimizer step or ``load_state_dict`` invalidates it). State-major ``[N, channels]``
        float32 tensors ``decay`` (a), ``input`` (v), ``readout`` (c); ``direct`` (d)
        ``[channels]``; per shared denominator ``a_rows`` ``[num_a, N]``, ``power`` (A^n)
        ``[num_a, N, N]`` and ``psi`` ``[num_a, n]`` (float32); ``kernel`` ``[channels, n]``.

        Under ``torch.compile`` the cache is bypassed: Dynamo can read neither storage pointers
        nor version counters (the cache key), so the graph derives the realization from the
        parameters on every call (always current; the compiler drops the entries a step does
        not use) and skips the finiteness check, which reads tensor values.
        """
        if self.bidirectional:
            raise ValueError("a bidirectional RTF filter reads future tokens: it has no recurrence")
        if torch.compiler.is_compiling():
            return self._solve_realization(check_finite=False)
        key = self._parameter_key()
        if self._realization is not None and self._realization_key == key:
            return self._realization
        self._realization = self._solve_realization(check_finite=True)
        self._realization_key = key
        return self._realization

    def _solve_realization(self, check_finite: bool) -> dict[str, torch.Tensor]:
        """The tensors :meth:`realization` returns, solved anew (no cache)."""
        a_rows = self.denominators().double()
        per = self.channels // self.num_a
        a = a_rows.repeat_interleave(per, dim=0) if per > 1 else a_rows
        try:
            real = ops.recurrent_realization(
                a,
                self.numerators().double(),
                self.h_0.double(),
                self.trunc_len,
                self.convention,
                self.reference_recurrence,
            )
            finite = not check_finite or all(
                torch.isfinite(real[n]).all() for n in ("v", "c", "d", "power")
            )
        except torch.linalg.LinAlgError:  # I - A^n singular, or A^n overflowed
            finite = False
        if not finite:
            raise ValueError(
                "the recurrent form of this RTF filter is not finite: its denominator has a pole "
                "on or outside the unit circle, where the state grows without bound (the "
                "convolution mode is unaffected). Train with constraint='l1_montel' to keep the "
                "poles inside"
            )
        n_fft = ops.fft_size(self.trunc_len)
        rows = slice(None, None, per)  # one channel of each shared denominator
        f32 = torch.float32
        return {
            "decay": a.T.to(f32).contiguous(),
            "input": real["v"].T.to(f32).contiguous(),
            "readout": real["c"].T.to(f32).contiguous(),
            "direct": real["d"].to(f32).contiguous(),
            "a_rows": a_rows.to(f32),
            "power": real["power"][rows].to(f32).contiguous(),
            "psi": ops.periodic_inverse(a_rows, self.trunc_len).to(f32),
            "kernel": self.kernel(n_fft).detach(),
        }

    def _expand(self, rows: torch.Tensor) -> torch.Tensor:
        per = self.channels // self.num_a
        return rows.repeat_interleave(per, dim=0) if per > 1 else rows

    def _apply_rows(self, matrices: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``M_c z_c`` for ``matrices [num_a, N, N]`` shared like the denominators and
        ``state [B, N, channels]``."""
        batch, n, _ = state.shape
        grouped = state.reshape(batch, n, self.num_a, self.channels // self.num_a)
        out = torch.einsum("rij,bjrp->birp", matrices, grouped)
        return out.reshape(batch, n, self.channels)

    def step(self, u: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One recurrent step: ``u [B, channels]`` -> ``y [B, channels]``; ``state [B, N,
        channels]`` float32 is advanced in place (Triton on CUDA)."""
        r = self.realization()
        return ops.rtf_step(u, state, r["decay"], r["input"], r["readout"], r["direct"])

    def prefill(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, state)`` for ``u [B, L, channels]`` from a zero state: the convolution and the
        state after it (float32 ``[B, N, channels]``)."""
        length = u.shape[1]
        self._check_length(length)
        r = self.realization()
        x = u.float()
        n = 2 * length
        u_spec = torch.fft.rfft(x.transpose(1, 2), n=n)
        k = r["kernel"][:, :length]
        y = torch.fft.irfft(u_spec * torch.fft.rfft(k, n=n), n=n)[..., :length].transpose(1, 2)
        psi = self._expand(r["psi"])
        state = ops.prefill_state(x, psi, r["input"].T, u_spec=u_spec)
        return y.to(u.dtype), state

    def continue_from(self, u: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``y [B, L, channels]`` for ``u`` following ``state`` (advanced in place): per piece
        of at most ``n - N`` tokens, the piece's own convolution plus the state's free response,
        then ``z <- A^L z + (state of the piece)``."""
        r = self.realization()
        n_fft = ops.fft_size(self.trunc_len)
        piece = n_fft - self.state_size
        a_full = r["decay"].T
        psi = self._expand(r["psi"])
        outs = []
        for start in range(0, u.shape[1], piece):
            chunk = u[:, start : start + piece].float()
            length = chunk.shape[1]
            plain = state - self._apply_rows(r["power"], state)  # x = (I - A^n) z
            y = causal_conv(chunk, r["kernel"][:, :length])
            y = y + ops.free_response(plain, a_full, r["kernel"], length)
            step_power = torch.linalg.matrix_power(
                ops.companion_matrix(r["a_rows"].double()), length
            ).to(torch.float32)
            advanced = self._apply_rows(step_power, state)
            state.copy_(advanced + ops.prefill_state(chunk, psi, r["input"].T))
            outs.append(y)
        return torch.cat(outs, dim=1).to(u.dtype)

    def recurrent(self, u: torch.Tensor, cache_layer: SsmStateLayer) -> torch.Tensor:
        """The cached modes (see the module docstring) for ``u [B, L, channels]``."""
        length = u.shape[1]
        self._check_length(length)
        if not cache_layer.has_state or cache_layer.ssm_state is None:
            if self.reference_recurrence:
                state = u.new_zeros(u.shape[0], self.state_size, self.channels, dtype=torch.float32)
                cache_layer.ssm_state = state
                return self._steps(u, state)
            y, state = self.prefill(u)
            cache_layer.ssm_state = state
            return y
        state = cache_layer.ssm_state
        if length == 1:
            return self.step(u[:, 0], state).unsqueeze(1)
        if self.reference_recurrence:
            return self._steps(u, state)
        return self.continue_from(u, state)

    def _steps(self, u: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.step(u[:, t], state) for t in range(u.shape[1])], dim=1)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, state_size={self.state_size}, trunc_len={self.trunc_len}, "
            f"num_a={self.num_a}, bidirectional={self.bidirectional}, init={self.init!r}, "
            f"constraint={self.constraint!r}, convention={self.convention!r}"
        )


@register_sequence_mixer("rtf", test_config=RtfConfig.tiny)
class RtfMixer(nn.Module):
    """The reference's LRA block: ``out_proj(drop(act(rtf(x))))``, with a GLU when
    ``output_glu`` (``out_proj`` maps to ``2 * hidden_size``, then ``a * sigmoid(b)``).

    Padding positions (mask 0) are zeroed before the filter, so left padding is the
    convolution's own zero history (and right padding is invisible to a bidirectional layer).
    The cache layer (:class:`~hazyzoo.modeling.cache.SsmStateLayer`) holds the companion-form
    state ``[batch, state_size, hidden_size]``.

    Config fields read by :meth:`from_config`: ``hidden_size``, ``state_size``, ``trunc_len``,
    ``num_a``, ``bidirectional``, ``init``, ``constraint``, ``convention``,
    ``reference_recurrence``, ``kernel_dropout``, ``activation``, ``output_glu``, ``dropout``.
    """

    def __init__(
        self,
        hidden_size: int,
        filter: RtfFilter,
        activation: str = "gelu",
        output_glu: bool = True,
        dropout: float = 0.0,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        if filter.channels != hidden_size:
            raise ValueError(
                f"the filter has {filter.channels} channels but hidden_size is {hidden_size}"
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.hidden_size = hidden_size
        self.layer_idx = layer_idx
        self.filter = filter
        self.act = _ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)
        self.output_glu = output_glu
        self.out_proj = nn.Linear(hidden_size, (2 if output_glu else 1) * hidden_size)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> RtfMixer:
        """Build layer ``layer_idx`` of a model with ``config``."""
        filt = RtfFilter(
            config.hidden_size,
            config.state_size,
            config.trunc_len,
            num_a=config.num_a,
            bidirectional=config.bidirectional,
            init=config.init,
            constraint=config.constraint,
            convention=config.convention,
            kernel_dropout=config.kernel_dropout,
            reference_recurrence=config.reference_recurrence,
        )
        return cls(
            config.hidden_size,
            filt,
            config.activation,
            config.output_glu,
            config.dropout,
            layer_idx,
        )

    def make_cache_layer(self) -> SsmStateLayer:
        """A fresh cache layer for this mixer (causal layers only)."""
        if self.filter.bidirectional:
            raise ValueError(
                "a bidirectional RTF layer reads future tokens and has no recurrent cache; "
                "call the model with use_cache=False"
            )
        return SsmStateLayer()

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: SsmStateLayer | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``attention_mask`` [batch, seq] (1 = token)."""
        u = hidden_states
        if attention_mask is not None:
            u = u * attention_mask[..., None].to(u.dtype)
        if cache_layer is None:
            y = self.filter(u)
        else:
            if self.filter.bidirectional:
                raise ValueError(
                    "a bidirectional RTF layer has no recurrent cache; call it without one"
                )
            y = self.filter.recurrent(u, cache_layer)
        y = self.drop(self.act(y))
        y = self.out_proj(y.to(self.out_proj.weight.dtype))
        if self.output_glu:
            y = F.glu(y, dim=-1)
        return y
