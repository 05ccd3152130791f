"""What every hazyzoo configuration shares: strict keyword and model-type checks.

:class:`HazyConfig` is the base of each architecture's config. transformers' ``PreTrainedConfig``
accepts any keyword (a misspelt ``hiden_size=32`` becomes a stray attribute while the model
silently uses the default) and loads a config.json of another ``model_type`` with a warning; a
hazyzoo config refuses both with an error that names the key. Subclasses implement
``check_architecture()`` (type and value checks of their fields, run once when the config is
built and again when a model is built from it) and call it at the end of ``__post_init__``.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from hazyzoo.validation import check_model_type, reject_unknown_config_kwargs


class HazyConfig(PreTrainedConfig):
    """Base of the hazyzoo configurations (no fields of its own)."""

    def __post_init__(self, **kwargs: Any) -> None:
        reject_unknown_config_kwargs(type(self), kwargs)
        super().__post_init__(**kwargs)

    @classmethod
    def own_fields(cls) -> list[str]:
        """The fields hazyzoo's config classes declare (not transformers' base fields such as
        the output switches), in declaration order."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, HazyConfig):
                names += [n for n in vars(klass).get("__annotations__", {}) if n not in names]
        return [n for n in names if n in getattr(cls, "__dataclass_fields__", {})]

    def check_architecture(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the field when the config is inconsistent
        (subclasses extend it)."""

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """transformers' ``from_dict``, refusing a config of another ``model_type``."""
        if config_dict.get("model_type") not in (None, cls.model_type):
            source = kwargs.get("name_or_path") or config_dict.get("_name_or_path") or "config"
            check_model_type(config_dict, cls.model_type, source)
        return super().from_dict(config_dict, **kwargs)
