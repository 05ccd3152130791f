"""VQ-VAE (van den Oord et al. 2017) with the rotation trick (Fifty et al. 2024) as a
transformers model: a convolutional encoder, a :class:`~hazyzoo.modeling.quantizer.VectorQuantizer`
bottleneck whose gradient estimator is ``config.gradient_estimator``, and a mirrored decoder.

``VQVAEModel(pixel_values)`` returns the reconstruction, the quantized latents, the code
indices, the loss (reconstruction MSE plus the quantizer's commitment/codebook terms, so
``transformers.Trainer`` trains it as is) and the codebook statistics. ``encode``, ``quantize``,
``decode`` and ``decode_indices`` are the parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput

from hazyzoo.configuration.configuration_vqvae import VQVAEConfig
from hazyzoo.modeling.base import HazyPreTrainedModel
from hazyzoo.modeling.quantizer import QuantizerOutput, VectorQuantizer

__all__ = ["VQVAEModel", "VQVAEOutput", "VQVAEPreTrainedModel"]


@dataclass
class VQVAEOutput(ModelOutput):
    """``loss`` = ``reconstruction_loss`` + the quantizer's loss; ``reconstruction`` [B, C, H,
    W]; ``quantized`` [B, codebook_dim, h, w]; ``indices`` [B, h, w]; codebook ``perplexity``,
    ``usage`` (fraction of codes in the batch) and ``quantization_error``."""

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    quantized: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    usage: torch.FloatTensor | None = None
    quantization_error: torch.FloatTensor | None = None


class _ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class VQVAEEncoder(nn.Module):
    """3x3 conv in, per stage (stride-2 conv when not the first) residual blocks, then norm,
    SiLU and a 1x1 conv to ``codebook_dim``."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        ch, g = config.channels, config.norm_groups
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        stages = []
        for i, width in enumerate(ch):
            layers: list[nn.Module] = []
            if i:
                layers.append(nn.Conv2d(ch[i - 1], width, 4, stride=2, padding=1))
            layers += [_ResBlock(width, g) for _ in range(config.num_res_blocks)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.norm_out = nn.GroupNorm(g, ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], config.codebook_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.stages:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQVAEDecoder(nn.Module):
    """The encoder mirrored: 3x3 conv in from ``codebook_dim``, per stage residual blocks then
    a stride-2 transposed conv, norm, SiLU, 3x3 conv out to the image channels."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        ch, g = list(reversed(config.channels)), config.norm_groups
        self.conv_in = nn.Conv2d(config.codebook_dim, ch[0], 3, padding=1)
        stages = []
        for i, width in enumerate(ch):
            layers: list[nn.Module] = [_ResBlock(width, g) for _ in range(config.num_res_blocks)]
            if i + 1 < len(ch):
                layers.append(nn.ConvTranspose2d(width, ch[i + 1], 4, stride=2, padding=1))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.norm_out = nn.GroupNorm(g, ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for stage in self.stages:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQVAEPreTrainedModel(HazyPreTrainedModel):
    """Base class of the VQ-VAE: config class, weight init, the input name."""

    config_class = VQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "pixel_values"
    lora_target_modules = ["conv1", "conv2"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Convolutions keep PyTorch's default (uniform +-1/sqrt(fan_in)), biases zero;
        GroupNorm ones/zeros; the codebook N(0, 1) (unit rows for cosine)."""
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            fan_in = (
                module.weight[0].numel()
                if isinstance(module, nn.Conv2d)
                else (module.weight.shape[0] * module.weight[0, 0].numel())
            )
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, VectorQuantizer):
            init.normal_(module.codebook)
            if module.distance == "cosine" and not getattr(
                module.codebook, "_is_hf_initialized", False
            ):
                module.codebook.copy_(F.normalize(module.codebook, dim=-1))
            if module.use_ema:
                init.copy_(module.embed_avg, module.codebook)
                init.ones_(module.cluster_size)
        else:
            super()._init_weights(module)


class VQVAEModel(VQVAEPreTrainedModel):
    """The VQ-VAE (see the module docstring)."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__(config)
        self.encoder = VQVAEEncoder(config)
        self.quantizer = VectorQuantizer(
            config.codebook_size,
            config.codebook_dim,
            gradient_estimator=config.gradient_estimator,
            distance=config.distance,
            commitment_weight=config.commitment_weight,
            use_ema=config.use_ema,
            decay=config.decay,
            kmeans_init=config.kmeans_init,
            threshold_ema_dead_code=config.threshold_ema_dead_code,
        )
        self.decoder = VQVAEDecoder(config)
        self.post_init()

    def _check_pixels(self, pixel_values: Any) -> None:
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
            raise TypeError("pixel_values must be a floating-point tensor [batch, channels, H, W]")
        c, f = self.config.in_channels, self.config.downsampling_factor
        if pixel_values.dim() != 4 or pixel_values.shape[1] != c:
            raise ValueError(
                f"pixel_values must be [batch, {c}, height, width], got {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[2] % f or pixel_values.shape[3] % f:
            raise ValueError(
                f"height and width must be multiples of the downsampling factor {f}, got "
                f"{tuple(pixel_values.shape[2:])}"
            )

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Latents before quantization: [B, codebook_dim, H / f, W / f]."""
        self._check_pixels(pixel_values)
        return self.encoder(pixel_values)

    def quantize(self, latents: torch.Tensor) -> QuantizerOutput:
        """The quantizer on latents [B, D, h, w]: ``quantized`` [B, D, h, w], ``indices``
        [B, h, w], the loss terms and codebook statistics."""
        out = self.quantizer(latents.permute(0, 2, 3, 1))
        out.quantized = out.quantized.permute(0, 3, 1, 2)
        return out

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] from quantized latents [B, D, h, w]."""
        return self.decoder(quantized)

    def decode_indices(self, indices: torch.LongTensor) -> torch.Tensor:
        """Images from code indices [B, h, w]."""
        return self.decode(self.quantizer.lookup(indices).permute(0, 3, 1, 2))

    def forward(
        self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs: Any
    ) -> VQVAEOutput | tuple:
        """Encode, quantize, decode; the loss is always computed (reconstruction MSE against
        ``pixel_values`` plus the quantizer's loss)."""
        q = self.quantize(self.encode(pixel_values))
        reconstruction = self.decode(q.quantized)
        recon_loss = F.mse_loss(reconstruction.float(), pixel_values.float())
        out = VQVAEOutput(
            loss=recon_loss + q.loss,
            reconstruction=reconstruction,
            quantized=q.quantized,
            indices=q.indices,
            reconstruction_loss=recon_loss,
            commitment_loss=q.commitment_loss,
            codebook_loss=q.codebook_loss,
            perplexity=q.perplexity,
            usage=q.usage,
            quantization_error=q.quantization_error,
        )
        if return_dict is None:
            return_dict = bool(getattr(self.config, "return_dict", True))
        return out if return_dict else out.to_tuple()
