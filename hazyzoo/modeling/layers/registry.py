"""Registries of sequence mixers and channel mixers, by the name a config uses.

A mixer registers itself in the file that defines it::

    @register_sequence_mixer("my_mixer", test_config=MyConfig.tiny)
    class MyMixer(nn.Module): ...

``test_config`` builds a tiny config the mixer can be built from; the mixer contract tests run
every registered mixer on it. The name ``"none"`` is reserved: a block without a sequence mixer
(or without a channel mixer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torch import nn
from transformers import PreTrainedConfig

NO_MIXER = "none"

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class MixerEntry:
    """A registered mixer class and the tiny config its contract tests build it from."""

    name: str
    cls: type
    test_config: Callable[[], PreTrainedConfig] | None


SEQUENCE_MIXERS: dict[str, MixerEntry] = {}
CHANNEL_MIXERS: dict[str, MixerEntry] = {}


def _register(
    registry: dict[str, MixerEntry],
    kind: str,
    name: str,
    test_config: Callable[[], PreTrainedConfig] | None,
) -> Callable[[T], T]:
    if not isinstance(name, str) or not name or name == NO_MIXER:
        raise ValueError(f"{kind} name must be a non-empty string other than {NO_MIXER!r}")

    def decorate(cls: T) -> T:
        if not hasattr(cls, "from_config"):
            raise TypeError(f"{kind} {cls.__name__} needs a from_config(config, layer_idx)")
        previous = registry.get(name)
        if previous is not None and previous.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"{kind} {name!r} is already registered to {previous.cls.__name__}")
        registry[name] = MixerEntry(name, cls, test_config)
        return cls

    return decorate


def register_sequence_mixer(
    name: str, *, test_config: Callable[[], PreTrainedConfig] | None = None
) -> Callable[[T], T]:
    """Class decorator: make ``name`` usable in a config's ``mixer_types``."""
    return _register(SEQUENCE_MIXERS, "sequence mixer", name, test_config)


def register_channel_mixer(
    name: str, *, test_config: Callable[[], PreTrainedConfig] | None = None
) -> Callable[[T], T]:
    """Class decorator: make ``name`` usable in a config's ``channel_mixer_types``."""
    return _register(CHANNEL_MIXERS, "channel mixer", name, test_config)


def layer_config(config: PreTrainedConfig, layer_idx: int) -> PreTrainedConfig:
    """The config layer ``layer_idx``'s mixers are built from: ``config.layer_config(idx)`` for
    configs with per-layer settings (MAD's), else ``config`` itself. Idempotent."""
    view = getattr(config, "layer_config", None)
    return view(layer_idx) if callable(view) else config


def _build(
    registry: dict[str, MixerEntry], field: str, name: str, config: PreTrainedConfig, idx: int
) -> nn.Module | None:
    config = layer_config(config, idx)
    if name == NO_MIXER:
        return None
    if name not in registry:
        raise ValueError(
            f"{field}[{idx}] = {name!r} is not a registered mixer; "
            f"choose from {[*sorted(registry), NO_MIXER]}"
        )
    return registry[name].cls.from_config(config, idx)


def build_sequence_mixer(config: PreTrainedConfig, layer_idx: int, name: str) -> nn.Module | None:
    """The sequence mixer ``name`` of layer ``layer_idx`` (None for ``"none"``)."""
    return _build(SEQUENCE_MIXERS, "mixer_types", name, config, layer_idx)


def build_channel_mixer(config: PreTrainedConfig, layer_idx: int, name: str) -> nn.Module | None:
    """The channel mixer ``name`` of layer ``layer_idx`` (None for ``"none"``)."""
    return _build(CHANNEL_MIXERS, "channel_mixer_types", name, config, layer_idx)
