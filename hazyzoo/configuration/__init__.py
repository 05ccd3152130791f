"""Configurations of the hazyzoo architectures."""

from hazyzoo.configuration.base import HazyConfig
from hazyzoo.configuration.configuration_based import BASED_PRESETS, BasedConfig

__all__ = ["BASED_PRESETS", "BasedConfig", "HazyConfig"]
