"""Shared helpers of the contract tests: the registered models, tiny random instances, inputs."""

from __future__ import annotations

import torch

import hazyzoo

CAUSAL_LMS = sorted(hazyzoo.CAUSAL_LM_REGISTRY)
ENCODERS = sorted(hazyzoo.ENCODER_REGISTRY)
ALL_MODELS = sorted({**hazyzoo.CAUSAL_LM_REGISTRY, **hazyzoo.ENCODER_REGISTRY})


def model_class(model_type: str) -> type:
    """The registered head class of ``model_type``."""
    return {**hazyzoo.CAUSAL_LM_REGISTRY, **hazyzoo.ENCODER_REGISTRY}[model_type]


def make_model(model_type: str, **overrides) -> torch.nn.Module:
    """A tiny eval-mode instance with random, non-trivial weights everywhere (norms and biases
    too, so no path hides behind ones and zeros)."""
    cls = model_class(model_type)
    torch.manual_seed(0)
    model = cls(cls.config_class.tiny(**overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def random_ids(model: torch.nn.Module, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    """Token ids in ``[1, vocab)`` (0 is left for padding)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, model.config.vocab_size, (batch, length), generator=g)


def main_output(out) -> torch.Tensor:
    """The first tensor a model returns (logits of an LM, hidden states of an encoder)."""
    return out.to_tuple()[0] if hasattr(out, "to_tuple") else out[0]


def left_padded(model, lengths: list[int], pad: int = 0, seed: int = 10):
    """A left-padded batch of random prompts of ``lengths``: (ids, mask, prompts)."""
    prompts = [random_ids(model, 1, n, seed=seed + n)[0] for n in lengths]
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = p
        mask[row, width - len(p) :] = 1
    return ids, mask, prompts
