"""Taylor linear attention in PyTorch: the spec the Triton kernels are tested against.

Every function here is plain, vectorised, differentiable PyTorch that accumulates in float32
(float64 inputs stay float64, which the tests use for tight checks). Nothing is validated here:
the entry points in :mod:`hazyzoo.kernels.linear_attention` do that.

Memory is linear in the sequence length. :func:`taylor_linear_attention_reference` walks the
sequence in chunks of ``chunk_size`` tokens (:data:`REFERENCE_CHUNK_SIZE` by default) and
carries the recurrent state from chunk to chunk: within a chunk the causal quadratic form
(:func:`taylor_attention_quadratic_reference`, an ``[chunk, chunk]`` score matrix), across
chunks the readout ``phi(q) @ state`` of all earlier keys, after which the chunk's keys are added
to the state. Per (batch, head) the forward holds ``O(chunk * (chunk + 1+F+F^2))`` working
memory, and the autograd graph through the chunk loop ``O(L * (chunk + 1+F+F^2))``; the
``L x L`` matrix is never built.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Tokens per chunk of the reference. Within a chunk the score matrix is [chunk, chunk]; across
# chunks each query reads the (1+F+F^2)-wide state. 128 keeps the intra-chunk tensors a backward
# saves (128 wide per token) below the width of the feature map (273 at F=16) while the Python
# loop stays short (256 iterations at 32k tokens).
REFERENCE_CHUNK_SIZE = 128


def taylor_feature_dim(feature_dim: int) -> int:
    """Size ``1 + F + F**2`` of the Taylor feature map for feature dim ``F`` (273 for F=16)."""
    return 1 + feature_dim + feature_dim * feature_dim


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half / float32 inputs; float64 stays float64 (used by the float64 tests)."""
    return torch.promote_types(dtype, torch.float32)


def taylor_feature_map_reference(x: Tensor) -> Tensor:
    """``phi(x) = [1, x / F^(1/4), vec(x x^T) / (sqrt(2) sqrt(F))]`` in the accumulate dtype."""
    acc = accumulate_dtype(x.dtype)
    feat = x.shape[-1]
    x = x.to(acc)
    ones = torch.ones(*x.shape[:-1], 1, dtype=acc, device=x.device)
    linear = x * feat**-0.25
    quadratic = (x[..., :, None] * x[..., None, :]).flatten(-2) / (math.sqrt(2.0) * math.sqrt(feat))
    return torch.cat([ones, linear, quadratic], dim=-1)


def taylor_attention_quadratic_reference(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Quadratic form: ``A = 1 + s + s^2/2`` with ``s = q k^T / sqrt(F)``, causal and masked.

    Builds the ``L x L`` matrix, so it is the spec for short sequences (and the intra-chunk
    step of the chunked reference), not something to run on long ones.
    """
    acc = accumulate_dtype(q.dtype)
    length, feat = q.shape[-2], q.shape[-1]
    s = (q.to(acc) @ k.to(acc).transpose(-1, -2)) / math.sqrt(feat)
    a = 1.0 + s + 0.5 * s * s
    keep = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    if key_mask is not None:
        keep = keep & key_mask.to(device=q.device, dtype=torch.bool)[:, None, None, :]
    a = torch.where(keep, a, torch.zeros((), dtype=acc, device=q.device))
    return a @ v.to(acc), a.sum(-1)


def taylor_attention_state_reference(
    k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(sum_s m_s phi(k_s)^T v_s, sum_s m_s phi(k_s))`` with the explicit feature map."""
    acc = accumulate_dtype(k.dtype)
    phi = taylor_feature_map_reference(k)  # [B, H, L, D_phi]
    if key_mask is not None:
        phi = phi * key_mask.to(device=k.device, dtype=torch.bool)[:, None, :, None].to(acc)
    return phi.transpose(-1, -2) @ v.to(acc), phi.sum(-2)


def chunked_state_reference(
    k: Tensor, v: Tensor, key_mask: Tensor | None = None, chunk_size: int = REFERENCE_CHUNK_SIZE
) -> tuple[Tensor, Tensor]:
    """:func:`taylor_attention_state_reference` ``chunk_size`` keys at a time and summed, so
    that ``phi(k)`` is never built for the whole sequence (the zero state when L = 0)."""
    kv_state = k_state = None
    for s0 in range(0, max(k.shape[-2], 1), chunk_size):  # one (empty) chunk when L = 0
        m_c = None if key_mask is None else key_mask[:, s0 : s0 + chunk_size]
        k_c, v_c = k[:, :, s0 : s0 + chunk_size], v[:, :, s0 : s0 + chunk_size]
        kv_c, ks_c = taylor_attention_state_reference(k_c, v_c, m_c)
        no_state = kv_state is None
        kv_state = kv_c if no_state else kv_state + kv_c
        k_state = ks_c if no_state else k_state + ks_c
    return kv_state, k_state


def state_readout_reference(
    q: Tensor, kv_state: Tensor, k_state: Tensor, chunk_size: int = REFERENCE_CHUNK_SIZE
) -> tuple[Tensor, Tensor]:
    """``(phi(q) @ kv_state, phi(q) . k_state)`` for ``q [B, H, L, F]``: what a recurrent
    state contributes to every query. Runs ``chunk_size`` queries at a time so that ``phi(q)``
    is never built for the whole sequence."""
    acc = torch.promote_types(accumulate_dtype(q.dtype), kv_state.dtype)
    kv_state, k_state = kv_state.to(acc), k_state.to(acc)[..., None]
    outs_o, outs_z = [], []
    for t0 in range(0, max(q.shape[-2], 1), chunk_size):  # one (empty) chunk when L = 0
        phi = taylor_feature_map_reference(q[..., t0 : t0 + chunk_size, :]).to(acc)
        outs_o.append(phi @ kv_state)
        outs_z.append((phi @ k_state)[..., 0])
    return _cat(outs_o, dim=-2), _cat(outs_z, dim=-1)


def _cat(parts: list[Tensor], dim: int) -> Tensor:
    """``torch.cat`` that hands back a single part as it is (no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def taylor_linear_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None = None,
    initial_state: tuple[Tensor, Tensor] | None = None,
    output_final_state: bool = False,
    chunk_size: int = REFERENCE_CHUNK_SIZE,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """Chunked causal Taylor attention with a state in and out (see the module docstring).

    ``o_t = sum_{s<=t} m_s A_ts v_s + phi(q_t) @ kv_0`` and ``z_t`` likewise with ``k_0``,
    where ``(kv_0, k_0) = initial_state`` (zero when ``None``); the final state is the initial
    one plus ``(phi(k)^T v, phi(k))`` summed over this call's kept keys, as new tensors.
    Differentiable w.r.t. q, k, v and the initial state.
    """
    length = q.shape[2]
    acc = accumulate_dtype(q.dtype)
    keep = None if key_mask is None else key_mask.to(device=q.device, dtype=torch.bool)
    kv_state = k_state = None
    if initial_state is not None:
        kv_state, k_state = (t.to(acc) for t in initial_state)
    outs_o, outs_z = [], []
    # One (empty) chunk when L = 0, so that the outputs and the final state still come out of
    # the same code: empty o and z, and a final state that is a new tensor.
    for t0 in range(0, max(length, 1), chunk_size):
        t1 = min(t0 + chunk_size, length)
        q_c, k_c, v_c = q[:, :, t0:t1], k[:, :, t0:t1], v[:, :, t0:t1]
        m_c = None if keep is None else keep[:, t0:t1]
        o_c, z_c = taylor_attention_quadratic_reference(q_c, k_c, v_c, m_c)
        if kv_state is not None:  # keys of earlier chunks (and of earlier calls)
            o_past, z_past = state_readout_reference(q_c, kv_state, k_state, chunk_size)
            o_c, z_c = o_c + o_past, z_c + z_past
        outs_o.append(o_c)
        outs_z.append(z_c)
        if t1 < length or output_final_state:
            kv_c, ks_c = taylor_attention_state_reference(k_c, v_c, m_c)
            no_state = kv_state is None
            kv_state = kv_c if no_state else kv_state + kv_c
            k_state = ks_c if no_state else k_state + ks_c
    final_state = (kv_state, k_state) if output_final_state else None
    return _cat(outs_o, dim=2), _cat(outs_z, dim=2), final_state


def taylor_attention_parallel_reference(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(o, z)`` of causal Taylor attention without a state: the chunked reference."""
    o, z, _ = taylor_linear_attention_reference(q, k, v, key_mask)
    return o, z


def taylor_attention_step_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv_state: Tensor,
    k_state: Tensor,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Add ``m phi(k)^T v`` / ``m phi(k)`` to the states in place (``m`` the key mask of each
    batch row, 1 when absent), then read them with ``phi(q)``.

    The update is computed in (at least) float32; a bfloat16 / float16 ``kv_state`` is
    rounded once when the sum is stored back, and the readout uses the unrounded sum."""
    acc = torch.promote_types(torch.float32, kv_state.dtype)
    phi_q = taylor_feature_map_reference(q).to(acc)
    phi_k = taylor_feature_map_reference(k).to(acc)
    if key_mask is not None:
        keep = key_mask.to(device=k.device, dtype=torch.bool).to(acc)
        phi_k = phi_k * keep[:, None, None]
    kv_new = kv_state.to(acc) + phi_k[..., :, None] * v.to(acc)[..., None, :]
    kv_state.copy_(kv_new)
    k_state.add_(phi_k.to(k_state.dtype))
    o = torch.einsum("bhd,bhdv->bhv", phi_q, kv_new)
    z = (phi_q * k_state.to(acc)).sum(-1)
    return o, z


def taylor_prefix_linear_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_enc: Tensor,
    v_enc: Tensor,
    key_mask: Tensor | None = None,
    enc_mask: Tensor | None = None,
    initial_state: tuple[Tensor, Tensor] | None = None,
    output_final_state: bool = False,
    chunk_size: int = REFERENCE_CHUNK_SIZE,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """Prefix linear attention (JRT-RNN): the (chunked) state of the encoder keys
    ``(sum_s e_s phi(k_enc_s)^T v_enc_s, sum_s e_s phi(k_enc_s))`` plus the initial state,
    then :func:`taylor_linear_attention_reference` from that state. Every query thus reads the
    whole prefix; the final state also holds it. Differentiable w.r.t. every tensor input."""
    kv_enc, ks_enc = chunked_state_reference(k_enc, v_enc, enc_mask, chunk_size)
    if initial_state is not None:
        acc = torch.promote_types(kv_enc.dtype, initial_state[0].dtype)
        kv_enc = initial_state[0].to(acc) + kv_enc.to(acc)
        ks_enc = initial_state[1].to(acc) + ks_enc.to(acc)
    return taylor_linear_attention_reference(
        q, k, v, key_mask, (kv_enc, ks_enc), output_final_state, chunk_size
    )
