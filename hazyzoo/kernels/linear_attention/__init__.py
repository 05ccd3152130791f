"""Taylor-feature-map linear attention (BASED): public entry points, input checks, dispatch.

BASED (Arora et al., "Simple linear attention language models balance the recall-throughput
tradeoff") replaces softmax with the 2nd-order Taylor feature map, for feature dim ``F``::

    phi(x) = [1, x / F**(1/4), vec(x x^T) / (sqrt(2) * sqrt(F))]      (size 1 + F + F**2)

so that ``phi(q) . phi(k) = 1 + s + s**2 / 2`` with ``s = q . k / sqrt(F)``. Causal linear
attention with an optional key (padding) mask ``m_s`` is then::

    A_ts = phi(q_t) . phi(k_s) * m_s   (s <= t, else 0)
    o_t  = sum_s A_ts v_s              numerator   [..., Dv]
    z_t  = sum_s A_ts                  normaliser  [...]

Every op returns ``o`` and ``z`` *unnormalised* (float32): the caller computes
``y = o / (z + eps)`` itself. The recurrent state after keys ``s`` is
``(kv_state, k_state) = (sum_s m_s phi(k_s)^T v_s, sum_s m_s phi(k_s))``, float32.

Public ops (each registered with :mod:`hazyzoo.kernels.dispatch`: a PyTorch reference that is
the spec, a Triton implementation, and this entry point that validates and dispatches):

* :func:`taylor_linear_attention` -- training / prefill with a state in and out (like
  flash-linear-attention's ``chunk_*`` ops): ``o``, ``z`` and optionally the final state.
* :func:`taylor_attention_parallel` -- the same without a state: ``(o, z)``.
* :func:`taylor_prefix_linear_attention` -- JRT-RNN's prefix linear attention: the same,
  where every query also reads the (non-causal) state of separate encoder keys / values over a
  prefix.
* :func:`taylor_attention_state` -- the recurrent state after a prefill.
* :func:`taylor_attention_step` -- one decode token: updates the state in place, then reads it.
* :func:`taylor_feature_map` -- the explicit feature map (reference only; small uses).

Layout: :mod:`.reference` (the spec; chunked, so memory is linear in the sequence length),
:mod:`.parallel` (tiled forward / backward kernels), :mod:`.chunked` (the chunked, state-passing
form: cost linear in the sequence length), :mod:`.state` (the prefill-state reduction,
differentiable), :mod:`.readout` (``phi(q) @ state`` and its backward), :mod:`.recurrent` (the
decode step), :mod:`.common` (what those share). The Triton modules are imported only when
triton imports.

Tiled or chunked: on the Triton path, :func:`taylor_linear_attention`,
:func:`taylor_attention_parallel` and :func:`taylor_prefix_linear_attention` (after reading the
encoder state) run the tiled kernels (every query tile visits every earlier key tile: cost
quadratic in L) below ``chunked.CHUNKED_MIN_LENGTH`` tokens (8192) and the chunked form from
there on (within a chunk the tiled kernel's steps, across chunks the state; cost linear in L).
``HAZYZOO_LINEAR_ATTENTION_FORM=parallel`` or ``=chunked`` forces one (for benchmarks and
tests; ``auto``, the default, picks by length). The two forms give the same results up to
float32 summation order.

Key-mask semantics (everywhere): ``key_mask[b, s]`` nonzero / True keeps key ``s`` of batch
row ``b``; zero / False drops it from every query's sum and from the state (left or right
padding). Queries are not masked: a padded query position still gets an output (``z`` is 0
there if it sees no kept key and no state).

Precision: all accumulation is float32. For float32 inputs every matmul runs in IEEE float32
(no TF32). For float16 / bfloat16 inputs the Triton matmuls use tensor cores in the input dtype:
the attention weights ``A`` (in the backward also ``dS`` and the float32 upstream gradient
``do``; in the state kernel ``phi(k)``) are rounded to the input dtype before their matmul, like
flash attention does with ``P``; ``z`` sums ``A`` in float32 before rounding. The readout of a
float32 state (an initial or prefix state, and the state's backward) never rounds the state:
its dots run on float32 operands, in TF32 for half inputs. With float16 inputs ``A`` must stay
below 65504, i.e. ``|q . k| / sqrt(F)`` below ~360.

The Triton kernels need ``TRITON_INTERPRET=1`` set *before this package is imported* to run on
CPU tensors (that is how the tests run them); on CUDA tensors they are compiled.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hazyzoo.kernels._utils import (
    KERNEL_DTYPES,
    check_float,
    check_rank,
    check_same_device,
    check_shape,
)
from hazyzoo.kernels.dispatch import ExampleInputs, call_op, register_op, triton_available
from hazyzoo.kernels.linear_attention.reference import (
    taylor_attention_parallel_reference,
    taylor_attention_state_reference,
    taylor_attention_step_reference,
    taylor_feature_dim,
    taylor_feature_map_reference,
    taylor_linear_attention_reference,
    taylor_prefix_linear_attention_reference,
)

__all__ = [
    "taylor_attention_parallel",
    "taylor_attention_state",
    "taylor_attention_step",
    "taylor_feature_dim",
    "taylor_feature_map",
    "taylor_linear_attention",
    "taylor_prefix_linear_attention",
]

if triton_available():
    from hazyzoo.kernels.linear_attention.chunked import (
        taylor_attention_parallel_triton_by_length as taylor_attention_parallel_triton,
    )
    from hazyzoo.kernels.linear_attention.chunked import (
        taylor_linear_attention_triton_by_length as taylor_linear_attention_triton,
    )
    from hazyzoo.kernels.linear_attention.chunked import taylor_prefix_linear_attention_triton
    from hazyzoo.kernels.linear_attention.common import INTERPRETED as _INTERPRETED
    from hazyzoo.kernels.linear_attention.recurrent import taylor_attention_step_triton
    from hazyzoo.kernels.linear_attention.state import taylor_attention_state_triton
else:
    _INTERPRETED = False
    taylor_attention_parallel_triton = taylor_linear_attention_triton = None
    taylor_prefix_linear_attention_triton = None
    taylor_attention_state_triton = taylor_attention_step_triton = None

State = tuple[Tensor, Tensor]

# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_qkv(q: Tensor | None, k: Tensor, v: Tensor, key_mask: Tensor | None, seq: bool) -> None:
    """Shapes ``[B, H, L, F]`` / ``[B, H, L, Dv]`` (``seq``) or ``[B, H, F]`` / ``[B, H, Dv]``."""
    rank = 4 if seq else 3
    qk_layout = "[B, H, L, F]" if seq else "[B, H, F]"
    v_layout = "[B, H, L, Dv]" if seq else "[B, H, Dv]"
    check_float("k", k)
    check_rank("k", k, rank, qk_layout)
    check_float("v", v)
    check_rank("v", v, rank, v_layout)
    if q is not None:
        check_float("q", q)
        check_rank("q", q, rank, qk_layout)
        if k.shape != q.shape:
            raise ValueError(f"k has shape {tuple(k.shape)} but q has {tuple(q.shape)}")
        if k.dtype != q.dtype:
            raise ValueError(f"k has dtype {k.dtype} but q has {q.dtype}")
    if v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"v has shape {tuple(v.shape)} but k has {tuple(k.shape)}: v must be {v_layout} "
            "with the same leading dims as k"
        )
    if v.dtype != k.dtype:
        raise ValueError(f"v has dtype {v.dtype} but k has {k.dtype}")
    if k.shape[-1] < 1:
        raise ValueError(f"feature dim F (last dim of k) must be >= 1, got shape {tuple(k.shape)}")
    if v.shape[-1] < 1:
        raise ValueError(f"value dim Dv (last dim of v) must be >= 1, got shape {tuple(v.shape)}")
    tensors = {"k": k, "v": v} if q is None else {"q": q, "k": k, "v": v}
    if key_mask is not None:
        if not isinstance(key_mask, Tensor):
            raise TypeError(f"key_mask must be a torch.Tensor or None, got {type(key_mask)}")
        expected = (k.shape[0], k.shape[2])
        if tuple(key_mask.shape) != expected:
            raise ValueError(
                f"key_mask must be [B, L] = {expected}, got shape {tuple(key_mask.shape)}"
            )
        if key_mask.is_complex():
            raise ValueError(f"key_mask must be bool or real 0/1, got dtype {key_mask.dtype}")
        tensors["key_mask"] = key_mask
    check_same_device(**tensors)


# dtypes the decode step takes for ``kv_state`` (``k_state`` is always float32)
STEP_STATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_state(
    names: tuple[str, str],
    kv_state: object,
    k_state: object,
    k: Tensor,
    v: Tensor,
    kv_dtypes: tuple[torch.dtype, ...] = (torch.float32,),
) -> None:
    """``kv_state [B, H, 1+F+F^2, Dv]`` (a dtype of ``kv_dtypes``) and ``k_state [B, H,
    1+F+F^2]`` (float32), on k's device, for k ``[B, H, (L,) F]`` and v ``[B, H, (L,) Dv]``;
    ``names`` go into messages."""
    for name, t, dtypes in zip(names, (kv_state, k_state), (kv_dtypes, (torch.float32,))):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in dtypes:
            allowed = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
            raise ValueError(f"{name} must be {allowed} (the recurrent state), got {t.dtype}")
    batch, heads, d_phi = k.shape[0], k.shape[1], taylor_feature_dim(k.shape[-1])
    check_shape(names[0], kv_state, (batch, heads, d_phi, v.shape[-1]), "[B, H, 1+F+F^2, Dv]")
    check_shape(names[1], k_state, (batch, heads, d_phi), "[B, H, 1+F+F^2]")
    check_same_device(k=k, **{names[0]: kv_state, names[1]: k_state})


def _check_prefix(k_enc: object, v_enc: object, enc_mask: object, q: Tensor, v: Tensor) -> None:
    """``k_enc [B, H, P, F]`` and ``v_enc [B, H, P, Dv]`` (B, H, F, Dv, dtype and device of
    ``q [B, H, L, F]`` / ``v [B, H, L, Dv]``; any P >= 0) and ``enc_mask`` None or ``[B, P]``."""
    check_float("k_enc", k_enc)
    check_rank("k_enc", k_enc, 4, "[B, H, P, F]")
    check_float("v_enc", v_enc)
    check_rank("v_enc", v_enc, 4, "[B, H, P, Dv]")
    batch, heads, _, feat = q.shape
    if (k_enc.shape[0], k_enc.shape[1], k_enc.shape[3]) != (batch, heads, feat):
        raise ValueError(
            f"k_enc must be [B, H, P, F] with B, H, F = {(batch, heads, feat)} as in q, got "
            f"shape {tuple(k_enc.shape)}"
        )
    expected = (*k_enc.shape[:3], v.shape[-1])
    if tuple(v_enc.shape) != expected:
        raise ValueError(
            f"v_enc must be [B, H, P, Dv] = {expected} (P of k_enc, Dv of v), got shape "
            f"{tuple(v_enc.shape)}"
        )
    for name, t in (("k_enc", k_enc), ("v_enc", v_enc)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
    tensors = {"q": q, "k_enc": k_enc, "v_enc": v_enc}
    if enc_mask is not None:
        if not isinstance(enc_mask, Tensor):
            raise TypeError(f"enc_mask must be a torch.Tensor or None, got {type(enc_mask)}")
        expected = (batch, k_enc.shape[2])
        if tuple(enc_mask.shape) != expected or enc_mask.is_complex():
            raise ValueError(
                f"enc_mask must be [B, P] = {expected} of bool or 0/1, got shape "
                f"{tuple(enc_mask.shape)} and dtype {enc_mask.dtype}"
            )
        tensors["enc_mask"] = enc_mask
    check_same_device(**tensors)


def _check_output_final_state(output_final_state: object) -> None:
    if not isinstance(output_final_state, bool):
        raise TypeError(
            f"output_final_state must be a bool, got {type(output_final_state).__name__}"
        )


def _check_initial_state(initial_state: object, k: Tensor, v: Tensor) -> None:
    """``None`` or a pair ``(kv_state, k_state)`` as :func:`_check_state` wants them."""
    if initial_state is None:
        return
    if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
        got = type(initial_state).__name__
        if isinstance(initial_state, (tuple, list)):
            got += f" of length {len(initial_state)}"
        raise TypeError(
            f"initial_state must be None or a tuple (kv_state [B, H, 1+F+F^2, Dv], "
            f"k_state [B, H, 1+F+F^2]) of float32 tensors, got {got}"
        )
    names = ("initial_state[0] (kv_state)", "initial_state[1] (k_state)")
    _check_state(names, *initial_state, k, v)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def taylor_feature_map(x: Tensor) -> Tensor:
    """Explicit Taylor feature map ``[..., F] -> [..., 1 + F + F^2]`` (reference only).

    ``phi(x) = [1, x / F^(1/4), vec(x x^T) / (sqrt(2) sqrt(F))]``, quadratic part row-major
    (index ``1 + F + i*F + j`` holds ``x_i x_j``). Computed and returned in float32 (float64
    stays float64). The attention ops never build it whole; it is for small things like tests.
    """
    check_float("x", x, (*KERNEL_DTYPES, torch.float64))
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be [..., F] with F >= 1, got shape {tuple(x.shape)}")
    return taylor_feature_map_reference(x)


def taylor_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None = None,
    initial_state: State | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor, State | None]:
    """Causal Taylor linear attention over whole sequences, continuing from a state.

    Args:
        q, k: ``[B, H, L, F]``, float16 / bfloat16 / float32, same dtype (any strides).
        v: ``[B, H, L, Dv]``, same dtype as q.
        key_mask: ``None`` or ``[B, L]`` (bool or 0/1 numbers); nonzero keeps key ``s``.
        initial_state: ``None`` or ``(kv_state [B, H, 1+F+F^2, Dv], k_state [B, H, 1+F+F^2])``,
            float32, on q's device: the state of the keys before this call (e.g. a cache).
            Never modified.
        output_final_state: also return the state after this call's keys.

    Returns:
        ``(o, z, final_state)``: ``o [B, H, L, Dv]`` and ``z [B, H, L]``, float32 and
        unnormalised, including the readout of the initial state (``o_t += phi(q_t) @
        kv_state``, ``z_t += phi(q_t) . k_state``); ``final_state`` is ``None`` unless
        ``output_final_state``, else new tensors ``initial_state + sum over the kept keys of
        (phi(k)^T v, phi(k))`` (the zero state stands in for ``None``).

    Gradients: the reference (CPU) path is differentiable w.r.t. q, k, v and the initial state,
    through o, z and the final state. The Triton (CUDA) path is differentiable through o and z
    (w.r.t. q, k, v and, via the readout, the initial state); its final state is computed
    under ``no_grad`` and carries no gradient.
    """
    _check_qkv(q, k, v, key_mask, seq=True)
    _check_initial_state(initial_state, k, v)
    _check_output_final_state(output_final_state)
    state = () if initial_state is None else tuple(initial_state)
    return call_op(
        "taylor_linear_attention",
        (q, k, v, key_mask, *state),
        q,
        k,
        v,
        key_mask,
        None if initial_state is None else state,
        output_final_state,
    )


def taylor_prefix_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_enc: Tensor,
    v_enc: Tensor,
    key_mask: Tensor | None = None,
    enc_mask: Tensor | None = None,
    initial_state: State | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor, State | None]:
    """Prefix linear attention (JRT-RNN, "Just read twice"): causal Taylor attention whose
    queries also read a non-causal prefix state.

    Per head, with ``e`` the encoder mask and ``m`` the key mask::

        (S_enc, z_enc) = (sum_{s<P} e_s phi(k_enc_s)^T v_enc_s, sum_{s<P} e_s phi(k_enc_s))
        o_t = phi(q_t) @ (S_0 + S_enc) + sum_{s<=t} m_s (phi(q_t) . phi(k_s)) v_s
        z_t = phi(q_t) . (z_0 + z_enc) + sum_{s<=t} m_s  phi(q_t) . phi(k_s)

    so ``y_t = o_t / (z_t + eps)`` is JRT-RNN's mixer output (the caller divides).

    Args:
        q, k: ``[B, H, L, F]``; v: ``[B, H, L, Dv]``, float16 / bfloat16 / float32, one dtype.
        k_enc: ``[B, H, P, F]`` and v_enc: ``[B, H, P, Dv]``: the encoder keys / values of the
            first P prefix positions (any P >= 0), same dtype and device as q.
        key_mask: ``None`` or ``[B, L]`` (bool or 0/1): nonzero keeps causal key ``s``.
        enc_mask: ``None`` or ``[B, P]`` (bool or 0/1): nonzero keeps encoder key ``s``.
        initial_state: ``None`` or ``(kv_state [B, H, 1+F+F^2, Dv], k_state [B, H, 1+F+F^2])``
            float32, as in :func:`taylor_linear_attention` (e.g. a cache). Never modified.
        output_final_state: also return the state after this call.

    Returns:
        ``(o, z, final_state)``: ``o [B, H, L, Dv]`` and ``z [B, H, L]``, float32 and
        unnormalised; ``final_state`` is ``None`` unless ``output_final_state``, else new
        tensors ``initial_state + (S_enc, z_enc) + the state of the kept causal keys``.

    Gradients: both paths are differentiable w.r.t. q, k, v, k_enc, v_enc and the initial
    state through o and z; the reference also through the final state, while the Triton
    path's final state is computed under ``no_grad`` and carries no gradient.
    """
    _check_qkv(q, k, v, key_mask, seq=True)
    _check_prefix(k_enc, v_enc, enc_mask, q, v)
    _check_initial_state(initial_state, k, v)
    _check_output_final_state(output_final_state)
    state = () if initial_state is None else tuple(initial_state)
    return call_op(
        "taylor_prefix_linear_attention",
        (q, k, v, k_enc, v_enc, key_mask, enc_mask, *state),
        q,
        k,
        v,
        k_enc,
        v_enc,
        key_mask,
        enc_mask,
        None if initial_state is None else state,
        output_final_state,
    )


def taylor_attention_parallel(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Causal Taylor linear attention over whole sequences (training and prefill), no state.

    Args:
        q, k: ``[B, H, L, F]``, float16 / bfloat16 / float32, same dtype (any strides).
        v: ``[B, H, L, Dv]``, same dtype as q.
        key_mask: ``None`` or ``[B, L]`` (bool or 0/1 numbers); nonzero keeps key ``s``.

    Returns:
        ``(o, z)``: unnormalised numerator ``o [B, H, L, Dv]`` and normaliser ``z [B, H, L]``,
        both float32; divide ``o / (z + eps)[..., None]`` yourself. Differentiable w.r.t. q, k,
        v (gradients of both o and z flow); gradients come back in the input dtype.
    """
    _check_qkv(q, k, v, key_mask, seq=True)
    return call_op("taylor_attention_parallel", (q, k, v, key_mask), q, k, v, key_mask)


def taylor_attention_state(k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> State:
    """Recurrent state after a prefill, so decoding can continue with
    :func:`taylor_attention_step`.

    Args:
        k: ``[B, H, L, F]``; v: ``[B, H, L, Dv]`` (same float dtype); key_mask as in
            :func:`taylor_attention_parallel` (masked keys are left out of the state).

    Returns:
        ``kv_state [B, H, 1+F+F^2, Dv] = sum_s m_s phi(k_s)^T v_s`` and
        ``k_state [B, H, 1+F+F^2] = sum_s m_s phi(k_s)``, float32. Both paths are
        differentiable w.r.t. k and v (masked keys get zero gradient); the Triton backward
        runs the readout kernels, so ``phi(k)`` is never stored.
    """
    _check_qkv(None, k, v, key_mask, seq=True)
    return call_op("taylor_attention_state", (k, v, key_mask), k, v, key_mask)


def taylor_attention_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv_state: Tensor,
    k_state: Tensor,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One decoding step: add the new token to the state IN PLACE, then attend with q.

    Args:
        q, k: ``[B, H, F]``; v: ``[B, H, Dv]`` (same float dtype).
        kv_state: ``[B, H, 1+F+F^2, Dv]`` (float32, or bfloat16 / float16 for a
            reduced-precision state: the update is computed in float32 and rounded once when
            stored) and k_state: ``[B, H, 1+F+F^2]`` (float32), contiguous, owned by the
            caller; updated in place to include ``(k, v)``.
        key_mask: ``None`` or ``[B]`` (bool or 0/1): a row whose entry is 0 adds nothing to
            its state (a padding token), though its query still reads the state.

    Returns:
        ``o = phi(q) . kv_state`` ``[B, H, Dv]`` and ``z = phi(q) . k_state`` ``[B, H]``,
        float32 and unnormalised, computed after the update (the token attends to itself)
        from the float32 value of the updated state (before a reduced-precision store).
    """
    _check_qkv(q, k, v, None, seq=False)
    _check_state(("kv_state", "k_state"), kv_state, k_state, k, v, STEP_STATE_DTYPES)
    for name, t in (("kv_state", kv_state), ("k_state", k_state)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous: it is updated in place")
    tensors = (q, k, v, kv_state, k_state)
    if key_mask is not None:
        if not isinstance(key_mask, Tensor):
            raise TypeError(f"key_mask must be a torch.Tensor or None, got {type(key_mask)}")
        if tuple(key_mask.shape) != (k.shape[0],) or key_mask.is_complex():
            raise ValueError(
                f"key_mask must be [B] = [{k.shape[0]}] of bool or 0/1, got shape "
                f"{tuple(key_mask.shape)} and dtype {key_mask.dtype}"
            )
        check_same_device(k=k, key_mask=key_mask)
        tensors = (*tensors, key_mask)
    return call_op("taylor_attention_step", tensors, *tensors)


# --------------------------------------------------------------------------------------------
# Registration (with small example inputs for the generic dispatch tests)
# --------------------------------------------------------------------------------------------


def _example_tensors(seed: int, *shapes: tuple[int, ...]) -> list[Tensor]:
    """Random float32 tensors of ``shapes`` (never all zeros)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for shape in shapes]


def _example_sequence() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``q, k [1, 2, 5, 4]``, ``v [1, 2, 5, 3]`` and a key mask dropping key 1."""
    q, k, v = _example_tensors(0, (1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 3))
    return q, k, v, torch.tensor([[True, False, True, True, True]])


def _example_state() -> State:
    """A random state ``(kv_state, k_state)`` for the example's F = 4, Dv = 3."""
    d_phi = taylor_feature_dim(4)
    kv_state, k_state = _example_tensors(1, (1, 2, d_phi, 3), (1, 2, d_phi))
    return kv_state, k_state


def _example_linear_attention() -> ExampleInputs:
    return _example_sequence(), {"initial_state": _example_state(), "output_final_state": True}


def _example_prefix() -> ExampleInputs:
    """The example sequence with a 3-position prefix (encoder key 1 dropped) and a state."""
    k_enc, v_enc = _example_tensors(2, (1, 2, 3, 4), (1, 2, 3, 3))
    q, k, v, key_mask = _example_sequence()
    enc_mask = torch.tensor([[True, False, True]])
    kwargs = {"initial_state": _example_state(), "output_final_state": True}
    return (q, k, v, k_enc, v_enc, key_mask, enc_mask), kwargs


def _example_parallel() -> ExampleInputs:
    return _example_sequence(), {}


def _example_state_op() -> ExampleInputs:
    _, k, v, key_mask = _example_sequence()
    return (k, v, key_mask), {}


def _example_step() -> ExampleInputs:
    q, k, v, _ = _example_sequence()
    key_mask = torch.tensor([True])
    return (q[:, :, 0], k[:, :, 0], v[:, :, 0], *_example_state()), {"key_mask": key_mask}


register_op(
    "taylor_linear_attention",
    entry=taylor_linear_attention,
    reference=taylor_linear_attention_reference,
    triton=taylor_linear_attention_triton,
    example_inputs=_example_linear_attention,
)
register_op(
    "taylor_prefix_linear_attention",
    entry=taylor_prefix_linear_attention,
    reference=taylor_prefix_linear_attention_reference,
    triton=taylor_prefix_linear_attention_triton,
    example_inputs=_example_prefix,
)
register_op(
    "taylor_attention_parallel",
    entry=taylor_attention_parallel,
    reference=taylor_attention_parallel_reference,
    triton=taylor_attention_parallel_triton,
    example_inputs=_example_parallel,
)
register_op(
    "taylor_attention_state",
    entry=taylor_attention_state,
    reference=taylor_attention_state_reference,
    triton=taylor_attention_state_triton,
    example_inputs=_example_state_op,
)
register_op(
    "taylor_attention_step",
    entry=taylor_attention_step,
    reference=taylor_attention_step_reference,
    triton=taylor_attention_step_triton,
    example_inputs=_example_step,
)
