"""Configurations of the hazyzoo architectures."""

from hazyzoo.configuration.configuration_based import BASED_PRESETS, BasedConfig

__all__ = ["BASED_PRESETS", "BasedConfig"]
