"""The vector quantizer: golden parity with the rotation trick's reference code (cfifty and
lucidrains, float64) and with vector-quantize-pytorch's EMA module step (float32), properties of
the rotation estimator, and the module's codebook machinery."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hazyzoo.modeling.quantizer import (
    VectorQuantizer,
    kmeans,
    nearest_code,
    rotation_trick,
    rotation_trick_vqgan,
    straight_through,
)
from tests.conftest import golden_dir


def _grad(fn, e, q, g):
    e = e.clone().requires_grad_()
    out = fn(e, q)
    (grad,) = torch.autograd.grad((out * g).sum(), e)
    return out.detach(), grad


@pytest.fixture(scope="module")
def functional():
    return load_file(golden_dir("rotation_trick") / "rotation_functional_f64.safetensors")


def test_golden_functional_f64(functional):
    f = functional
    e, g = f["encoder_outputs"], f["upstream_grad"]
    assert torch.equal(nearest_code(e, f["codebook"]), f["indices"])
    q = f["codebook"][f["indices"]]
    torch.testing.assert_close(q, f["quantized"], atol=0, rtol=0)
    out, grad = _grad(rotation_trick, e, q, g)  # lucidrains' rotate_to: clamp eps
    torch.testing.assert_close(out, f["lucidrains_out"], atol=1e-13, rtol=0)
    torch.testing.assert_close(grad, f["lucidrains_grad"], atol=1e-13, rtol=0)
    # the paper's code adds eps to the norms instead: 2.5e-6 apart (the README's figure)
    torch.testing.assert_close(out, f["cfifty_out"], atol=5e-6, rtol=0)
    torch.testing.assert_close(grad, f["cfifty_grad"], atol=5e-6, rtol=0)
    out, grad = _grad(rotation_trick_vqgan, e, q, g)  # the reference has no eps at all
    torch.testing.assert_close(out, f["vqgan_out"], atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, f["vqgan_grad"], atol=1e-12, rtol=0)
    out, grad = _grad(straight_through, e, q, g)
    torch.testing.assert_close(out, f["ste_out"], atol=1e-14, rtol=0)
    torch.testing.assert_close(grad, f["ste_grad"], atol=0, rtol=0)
    # the gradient is lambda R^T g with the reference's materialised R
    want = f["scale_lambda"] * torch.einsum("nij,ni->nj", f["R_materialized"], g)
    torch.testing.assert_close(_grad(rotation_trick, e, q, g)[1], want, atol=1e-12, rtol=0)


def test_golden_ema_module_step_f32():
    f = load_file(golden_dir("rotation_trick") / "lucidrains_vq_module_f32.safetensors")
    vq = VectorQuantizer(16, 8, decay=0.8, commitment_weight=0.25, gradient_estimator="rotation")
    with torch.no_grad():
        vq.codebook.copy_(f["codebook_before"])
        vq.embed_avg.copy_(f["codebook_before"])
        vq.cluster_size.fill_(1.0)
    x = f["x"].clone().requires_grad_()
    out = vq.train()(x)
    ((out.quantized * f["upstream_grad"]).sum() + out.loss.sum()).backward()
    assert torch.equal(out.indices, f["indices"])
    torch.testing.assert_close(out.quantized, f["quantized"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.loss.reshape(1), f["loss"], atol=1e-7, rtol=0)
    torch.testing.assert_close(x.grad, f["grad_x"], atol=1e-6, rtol=0)
    torch.testing.assert_close(vq.cluster_size, f["cluster_size_after"], atol=0, rtol=0)
    torch.testing.assert_close(vq.embed_avg, f["embed_avg_after"], atol=0, rtol=0)
    torch.testing.assert_close(vq.codebook, f["codebook_after_ema"], atol=1e-7, rtol=0)
    with torch.no_grad():
        out = vq.eval()(f["x"])
    assert torch.equal(out.indices, f["eval_indices"])
    assert torch.equal(out.quantized, f["eval_quantized"])  # eval: exactly the code rows


def _random(n=32, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g, dtype=torch.float64) * 2,
        torch.randn(n, d, generator=g, dtype=torch.float64),
    )


def test_rotation_properties():
    e, q, g = _random()
    out, grad = _grad(rotation_trick, e, q, g)
    torch.testing.assert_close(out, q, atol=1e-12, rtol=0)  # the forward value is the code
    # |grad| = (|q| / |e|) |g|: a rotation keeps norms, the rescale scales them
    torch.testing.assert_close(
        grad.norm(dim=-1), q.norm(dim=-1) / e.norm(dim=-1) * g.norm(dim=-1), atol=1e-10, rtol=0
    )
    # the angle between gradients equals the angle between e and its code... under R^T:
    # <R^T g, e> / (|g| |e|) = <g, R e> / (|g| |e|) = cos(g, q)
    cos_grad_e = (grad * e).sum(-1) / (grad.norm(dim=-1) * e.norm(dim=-1))
    cos_g_q = (g * q).sum(-1) / (g.norm(dim=-1) * q.norm(dim=-1))
    torch.testing.assert_close(cos_grad_e, cos_g_q, atol=1e-10, rtol=0)
    # and the angle between two upstream gradients is preserved
    g2 = torch.randn_like(g)
    _, grad2 = _grad(rotation_trick, e, q, g2)
    angle = lambda a, b: (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))  # noqa: E731
    torch.testing.assert_close(angle(grad, grad2), angle(g, g2), atol=1e-10, rtol=0)


@pytest.mark.parametrize("fn", [rotation_trick, rotation_trick_vqgan])
def test_zero_vectors_give_the_code_and_no_nan(fn):
    e, q, g = _random(4, 5)
    e[0] = 0.0
    q[1] = 0.0
    out, grad = _grad(fn, e, q, g)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out[:2], q[:2], atol=1e-12, rtol=0)
    torch.testing.assert_close(grad[0], g[0])  # straight-through at a zero input


def test_vqgan_gradient_has_no_radial_component():
    e, q, g = _random()
    _, grad = _grad(rotation_trick_vqgan, e, q, g)
    torch.testing.assert_close(
        (grad * e).sum(-1), torch.zeros(len(e), dtype=e.dtype), atol=1e-10, rtol=0
    )


def test_module_shapes_losses_projection_and_cosine():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 4, input_dim=12, distance="cosine", gradient_estimator="ste")
    x = torch.randn(2, 5, 7, 12, requires_grad=True)
    out = vq.train()(x)
    assert out.quantized.shape == x.shape and out.indices.shape == (2, 5, 7)
    assert 0 < float(out.usage) <= 1 and 1 <= float(out.perplexity) <= 32
    (out.quantized.sum() + out.loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.allclose(vq.codebook.norm(dim=-1), torch.ones(32), atol=1e-5)  # cosine: unit
    again = vq.lookup(out.indices)
    assert again.shape == x.shape


def test_gradient_codebook_learns_through_the_codebook_loss():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, use_ema=False, gradient_estimator="rotation")
    x = torch.randn(64, 4)
    out = vq.train()(x)
    out.loss.backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    assert float(out.codebook_loss) > 0


def test_kmeans_init_and_dead_code_restarts():
    torch.manual_seed(0)
    centres = torch.randn(4, 3) * 10
    x = centres[torch.randint(0, 4, (400,))] + 0.1 * torch.randn(400, 3)
    found, counts = kmeans(x, 4, iters=20, generator=torch.Generator().manual_seed(0))
    assert counts.sum() == 400
    # every true centre has a found centroid near it
    assert torch.cdist(centres, found).min(-1).values.max() < 1.0
    vq = VectorQuantizer(6, 3, kmeans_init=True, threshold_ema_dead_code=2.0).train()
    vq(x)
    assert float(vq.initted) == 1.0
    before = vq.codebook.clone()
    vq.cluster_size[0] = 0.0  # dead: restarted from the next batch
    vq(x[:50])
    assert not torch.equal(vq.codebook[0], before[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(gradient_estimator="gumbel"), "gradient_estimator"),
        (dict(distance="manhattan"), "distance"),
        (dict(decay=1.0), "decay"),
        (dict(use_ema=False, threshold_ema_dead_code=1.0), "use_ema"),
        (dict(codebook_size=0), "codebook_size"),
    ],
)
def test_bad_settings(kwargs, match):
    args = dict(codebook_size=8, codebook_dim=4)
    with pytest.raises(ValueError, match=match):
        VectorQuantizer(**{**args, **kwargs})


def test_bad_inputs():
    vq = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="input_dim=4"):
        vq(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        vq(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        vq(torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        vq.lookup(torch.tensor([8]))
