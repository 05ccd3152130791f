"""VQVAEModel: shapes and parts, the estimator switch, save/load bit-exact, Auto classes, a
Trainer run, the card, and clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, Trainer, TrainingArguments

from hazyzoo import VQVAEConfig, VQVAEModel


def model(seed: int = 0, **overrides) -> VQVAEModel:
    torch.manual_seed(seed)
    return VQVAEModel(VQVAEConfig.tiny(**overrides))


def images(n: int = 6, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_forward_parts_and_decoding_indices():
    m = model().eval()
    x = images()
    with torch.no_grad():
        out = m(x)
        assert out.reconstruction.shape == x.shape
        assert out.quantized.shape == (6, 8, 4, 4) and out.indices.shape == (6, 4, 4)
        q = m.quantize(m.encode(x))
        torch.testing.assert_close(q.quantized, out.quantized)
        torch.testing.assert_close(m.decode_indices(out.indices), out.reconstruction)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.25 * out.commitment_loss)
    assert 0 < float(out.usage) <= 1 and float(out.perplexity) >= 1


def test_the_estimator_changes_the_encoders_gradient_only():
    grads = {}
    for estimator in ("ste", "rotation", "rotation_vqgan"):
        m = model(gradient_estimator=estimator).train()
        out = m(images())
        out.loss.backward()
        grads[estimator] = m.encoder.conv_in.weight.grad.clone()
        assert torch.isfinite(grads[estimator]).all()
    assert not torch.allclose(grads["ste"], grads["rotation"])
    assert not torch.allclose(grads["rotation"], grads["rotation_vqgan"])


def test_save_load_bit_exact_and_auto_classes(tmp_path):
    m = model(kmeans_init=True).train()
    m(images())  # k-means init and one EMA step: the buffers must survive the round trip
    m.eval().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "README.md").is_file()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, VQVAEModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VQVAEConfig)
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        assert torch.equal(m(images()).reconstruction, loaded(images()).reconstruction)


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i]}


def test_trains_with_trainer(tmp_path):
    m = model()
    data = images(64)
    with torch.no_grad():
        before = m.eval()(data).reconstruction_loss.item()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, num_train_epochs=6,
        learning_rate=3e-3, report_to="none", save_strategy="no", use_cpu=True,
        disable_tqdm=True, logging_strategy="no",
    )  # fmt: skip
    Trainer(model=m.train(), args=args, train_dataset=_Images(data)).train()
    with torch.no_grad():
        after = m.eval()(data).reconstruction_loss.item()
    assert after < 0.7 * before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(gradient_estimator="gumbel"), "gradient_estimator"),
        (dict(channels=[]), "channels"),
        (dict(norm_groups=3), "norm_groups"),
        (dict(use_ema=False, threshold_ema_dead_code=1.0), "use_ema"),
        (dict(decay=1.5), "decay"),
    ],
)
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VQVAEConfig.tiny(**kwargs)


def test_bad_inputs():
    m = model()
    with pytest.raises(ValueError, match="multiples of the downsampling factor 2"):
        m(torch.rand(1, 1, 7, 8))
    with pytest.raises(ValueError, match=r"\[batch, 1, height, width\]"):
        m(torch.rand(1, 3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.ones(1, 1, 8, 8, dtype=torch.long))
