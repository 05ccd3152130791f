"""Data collators for hazyzoo's training objectives (usable as ``Trainer(data_collator=...)``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hazyzoo.validation import check_float, check_positive


class JrtDataCollator:
    """Batches token sequences for JRT-RNN's objective (Arora et al. 2024).

    Each feature is a mapping with ``input_ids`` (a list or 1-D tensor of ids, optionally with
    ``attention_mask``). The collator pads to the longest row (``padding_side`` "right" or
    "left", with ``pad_token_id``), and in each row's prefix (its first ``enc_length`` real
    tokens, what the model reads non-causally) replaces ``round(mlm_probability * n)`` randomly
    chosen tokens by ``mask_token_id``. It returns ``input_ids``, ``attention_mask``,
    ``labels`` (the original ids, -100 on pads; :class:`~hazyzoo.JrtForCausalLM` skips the
    targets inside the prefix itself) and ``mlm_labels`` (the original id at each masked
    position, -100 elsewhere). The choice is deterministic: batch ``i`` of the collator's life
    uses a generator seeded with ``(seed, i)``, so the same data order gives the same masks
    (with several DataLoader workers, each worker counts its own batches).
    """

    def __init__(
        self,
        *,
        enc_length: int,
        mask_token_id: int,
        pad_token_id: int,
        mlm_probability: float = 0.15,
        seed: int = 0,
        padding_side: str = "right",
    ) -> None:
        self.enc_length = enc_length
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self.mlm_probability = mlm_probability
        self.seed = seed
        self.padding_side = padding_side
        check_positive(self, "enc_length")
        for name in ("mask_token_id", "pad_token_id", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        check_float(self, "mlm_probability", ge=0)
        if self.mlm_probability > 1:
            raise ValueError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self._calls = 0

    @classmethod
    def from_config(
        cls, config: Any, *, pad_token_id: int | None = None, seed: int = 0, **kwargs: Any
    ) -> JrtDataCollator:
        """A collator with the prefix length, mask token and masking rate of a
        :class:`~hazyzoo.JrtConfig` (the pad id defaults to the config's)."""
        pad = config.pad_token_id if pad_token_id is None else pad_token_id
        if config.mask_token_id is None:
            raise ValueError("config.mask_token_id is None: set the mask token the MLM loss uses")
        if pad is None:
            raise ValueError("pass pad_token_id (the config has none)")
        return cls(
            enc_length=config.enc_length,
            mask_token_id=config.mask_token_id,
            pad_token_id=pad,
            mlm_probability=config.mlm_probability,
            seed=seed,
            **kwargs,
        )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``features`` into one batch (see the class docstring)."""
        if not features:
            raise ValueError("JrtDataCollator got an empty list of features")
        rows = []
        for i, feature in enumerate(features):
            if not isinstance(feature, Mapping) or "input_ids" not in feature:
                raise ValueError(f"feature {i} must be a mapping with input_ids")
            ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            if ids.dim() != 1 or ids.numel() == 0:
                raise ValueError(f"feature {i} input_ids must be a non-empty 1-D sequence of ids")
            mask = feature.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask, dtype=torch.long)
            if mask.shape != ids.shape:
                raise ValueError(
                    f"feature {i} attention_mask has shape {tuple(mask.shape)}, input_ids "
                    f"{tuple(ids.shape)}"
                )
            rows.append((ids, mask))
        width = max(ids.numel() for ids, _ in rows)
        batch = len(rows)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for r, (ids, mask) in enumerate(rows):
            span = (
                slice(0, ids.numel())
                if self.padding_side == "right"
                else slice(width - ids.numel(), width)
            )
            input_ids[r, span], attention_mask[r, span] = ids, mask
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        mlm_labels = torch.full_like(input_ids, -100)
        generator = torch.Generator().manual_seed(hash((self.seed, self._calls)) & (2**63 - 1))
        self._calls += 1
        real = attention_mask.bool()
        in_prefix = real & (real.long().cumsum(-1) <= self.enc_length)
        masked_ids = input_ids.clone()
        for r in range(batch):
            where = in_prefix[r].nonzero()[:, 0]
            count = round(self.mlm_probability * where.numel())
            if count == 0:
                continue
            chosen = where[torch.randperm(where.numel(), generator=generator)[:count]]
            mlm_labels[r, chosen] = input_ids[r, chosen]
            masked_ids[r, chosen] = self.mask_token_id
        return {
            "input_ids": masked_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "mlm_labels": mlm_labels,
        }
