"""What every hazyzoo model shares, decoders, encoders, autoencoders and heads alike.

:class:`HazyPreTrainedModel` adds to transformers' ``PreTrainedModel``:

* the config is validated again when a model is built from it (a config changed after
  construction is re-checked), through the config's ``check_architecture()``;
* ``save_pretrained`` writes a hazyzoo model card (``README.md``, when absent), can upload the
  directory (``push_to_hub=True``) and can export self-contained modeling code
  (``remote_code=True``) so the checkpoint loads with ``trust_remote_code=True`` where hazyzoo is
  not installed; ``push_to_hub`` uploads config, weights, generation config and card at once;
* ``from_pretrained`` is strict: missing, unexpected or mismatched weights are an error naming
  them (transformers only logs them and initialises the missing ones at random);
* weight init survives ``from_pretrained``'s meta-device loading (``transformers.initialization``
  helpers). Modules with parameters of their own kind (SSM coefficients, filters, codebooks)
  define ``_init_hazy_weights(config)``, which :meth:`_init_weights` calls; that hook sets the
  module's *own* parameters and buffers (its submodules are visited on their own).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init

_HUB_KEYS = ("repo_id", "commit_message", "private", "token", "create_pr", "revision")
# Output projections that write into the residual stream (scaled down at init, GPT-2 style).
RESIDUAL_PROJECTIONS = ("o_proj", "out_proj", "down_proj")


# Set while a model builds its inner base model, whose config the outer model has just checked.
_CONFIG_CHECKED = contextvars.ContextVar("hazyzoo_config_checked", default=False)


@contextlib.contextmanager
def config_already_checked() -> Iterator[None]:
    """Build submodels inside this block to skip re-checking the config the outer model checked."""
    token = _CONFIG_CHECKED.set(True)
    try:
        yield
    finally:
        _CONFIG_CHECKED.reset(token)


def mark_residual_projections(model: nn.Module) -> None:
    """Flag the Linear layers named in :data:`RESIDUAL_PROJECTIONS` for the scaled init."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in RESIDUAL_PROJECTIONS:
            module._hazy_residual_projection = True


class HazyPreTrainedModel(PreTrainedModel):
    """Base of every hazyzoo model (each architecture's ``<Name>PreTrainedModel`` derives from
    it, or from the decoder base built on it)."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_attention_backend = False
    # Regular expressions of state-dict keys that may hold non-float tensors (integer buffers);
    # every other stored tensor must be floating point (checked when loading).
    _hazy_non_float_keys: tuple[str, ...] = ()

    def __init__(self, config: PreTrainedConfig, *args: Any, **kwargs: Any) -> None:
        check = getattr(config, "check_architecture", None)
        if check is not None and not _CONFIG_CHECKED.get():
            check()
        super().__init__(config, *args, **kwargs)

    def example_inputs(self, batch_size: int = 2, seq_len: int = 8, seed: int = 0) -> dict:
        """Random, valid keyword inputs for this model (token ids drawn from the vocabulary,
        never the padding id 0), e.g. to smoke-test a checkpoint; models whose inputs are not
        token ids override it."""
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, self.config.vocab_size, (batch_size, seq_len), generator=generator)
        return {"input_ids": ids.to(self.device)}

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """transformers' ``from_pretrained``, but strict: a damaged weight file or a weight of an
        integer dtype is an error naming it, and weights that are missing, unexpected (for this
        class) or of the wrong shape raise ``ValueError`` naming them instead of being logged
        and re-initialised (pass ``ignore_mismatched_sizes=True`` to re-initialise mismatched
        ones on purpose). A class may list regular expressions of checkpoint keys it knowingly
        drops in transformers' ``_keys_to_ignore_on_load_unexpected`` (a base model loaded from
        a checkpoint with a head)."""
        from hazyzoo.validation import check_loading_info, check_state_dtypes

        local = Path(str(pretrained_model_name_or_path))
        if local.is_dir():
            # transformers' weight files: model.safetensors, model-00001-of-00002.safetensors,
            # model.<variant>.safetensors (other safetensors files in the folder are not read).
            for weights in sorted(local.glob("model*.safetensors")):
                # Reads the header only: a damaged file, or integer/bool tensors where
                # weights are meant, is an error naming the file and the key.
                check_state_dtypes(weights, exempt=cls._hazy_non_float_keys)
        wants_info = kwargs.pop("output_loading_info", False)
        allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path,
            *args,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **kwargs,
        )
        checked = dict(info)
        if allow_mismatch:
            checked.pop("mismatched_keys", None)
        check_loading_info(
            checked,
            model_class=cls,
            path=pretrained_model_name_or_path,
            ignore_unexpected=cls._keys_to_ignore_on_load_unexpected or (),
        )
        return (model, info) if wants_info else model

    # --- saving and publishing -------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | Path,
        *args: Any,
        push_to_hub: bool = False,
        remote_code: bool = False,
        **kwargs: Any,
    ) -> None:
        """transformers' ``save_pretrained`` plus a hazyzoo model card (``README.md``, written
        when absent). ``remote_code=True`` also writes the modeling code and an ``auto_map``
        so the directory loads with ``trust_remote_code=True`` without hazyzoo. With
        ``push_to_hub=True`` the directory is uploaded to ``repo_id`` (default: its name)."""
        from hazyzoo.hub import push_folder_to_hub, write_model_card

        hub = {k: kwargs.pop(k) for k in _HUB_KEYS if k in kwargs}
        if "token" in hub:
            kwargs["token"] = hub["token"]
        super().save_pretrained(save_directory, *args, push_to_hub=False, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        self._save_extra_files(save_directory)
        if remote_code:
            from hazyzoo.remote_code import write_remote_code

            write_remote_code(save_directory, self)
        write_model_card(save_directory, overwrite=False)
        if push_to_hub:
            repo_id = hub.pop("repo_id", None) or Path(save_directory).name
            push_folder_to_hub(save_directory, repo_id, **hub)

    def _save_extra_files(self, save_directory: str | Path) -> None:
        """Files a model class writes beside its weights (on the main process, before any
        upload): e.g. a text encoder's sentence-transformers configuration. None by default."""

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
        tags: list[str] | None = None,
        base_model: str | None = None,
        remote_code: bool = False,
    ) -> Any:
        """Upload config, safetensors weights, generation config and the hazyzoo model card
        (and the modeling code with ``remote_code=True``) to ``repo_id`` in one commit."""
        from hazyzoo.hub import push_folder_to_hub, write_model_card

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, max_shard_size=max_shard_size, remote_code=remote_code)
            write_model_card(tmp, repo_id=repo_id, tags=tags, base_model=base_model)
            return push_folder_to_hub(
                tmp,
                repo_id,
                commit_message=commit_message,
                private=private,
                token=token,
                revision=revision,
                create_pr=create_pr,
            )

    # --- initialisation --------------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """A module's ``_init_hazy_weights(config)`` hook when it has one; otherwise the
        reference rules: Linear and Embedding normal(0, initializer_range) (an embedding's
        ``padding_idx`` row zero), residual output
        projections scaled by 1/sqrt(2 * num_hidden_layers), depthwise convolutions
        uniform(+-1/sqrt(fan_in)), biases zero.

        Uses ``transformers.initialization`` so weights loaded by ``from_pretrained`` are kept.
        """
        hook = getattr(module, "_init_hazy_weights", None)
        if hook is not None:
            hook(self.config)
            return
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            scale = 1.0
            if getattr(module, "_hazy_residual_projection", False):
                scale = 1.0 / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std * scale)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            # A padding row starts at zero (as in transformers), unless the weight was loaded.
            if module.padding_idx is not None and not getattr(
                module.weight, "_is_hf_initialized", False
            ):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Conv1d):
            bound = 1.0 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
