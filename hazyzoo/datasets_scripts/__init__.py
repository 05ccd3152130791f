"""``datasets`` builders for the zoo's data sets, and :func:`load` to build one by name.

datasets 4+ no longer runs loading scripts, so each data set here is a
``datasets.GeneratorBasedBuilder`` subclass registered in :data:`BUILDERS`;
``load("mqar", "tiny")`` instantiates it, prepares it (in ``cache_dir``) and returns the
``DatasetDict``. ``datasets`` is optional for the rest of hazyzoo (the GPU image lacks it), so
this module imports it only when it is installed; :data:`BUILDERS` is empty otherwise and
:func:`load` raises ``ImportError``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

__all__ = ["BUILDERS", "load"]

BUILDERS: dict[str, type] = {}
"""Builder classes by data-set name. A new builder module adds itself below."""

if importlib.util.find_spec("datasets") is not None:
    from hazyzoo.datasets_scripts.mqar import Mqar, MqarConfig

    BUILDERS["mqar"] = Mqar
    __all__ += ["Mqar", "MqarConfig"]
    from hazyzoo.datasets_scripts.locov1 import LoCoV1, LoCoV1Config

    BUILDERS["locov1"] = LoCoV1
    __all__ += ["LoCoV1", "LoCoV1Config"]
    from hazyzoo.datasets_scripts.mad import Mad, MadTaskConfig

    BUILDERS["mad"] = Mad
    __all__ += ["Mad", "MadTaskConfig"]
    from hazyzoo.datasets_scripts.cookbook import Cookbook, CookbookConfig

    BUILDERS["cookbook"] = Cookbook
    __all__ += ["Cookbook", "CookbookConfig"]


def load(
    name: str,
    config: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    **overrides: Any,
) -> datasets.DatasetDict:
    """Build the data set ``name`` (variant ``config``, its default when None) and return it.

    ``overrides`` replace fields of the named config (e.g. ``num_train_examples=100``); the
    prepared Arrow files go to ``cache_dir`` (datasets' default cache when None).
    """
    if importlib.util.find_spec("datasets") is None:
        raise ImportError(
            "hazyzoo.datasets_scripts.load needs the `datasets` package: pip install datasets"
        )
    if name not in BUILDERS:
        raise ValueError(f"unknown data set name {name!r}; valid names: {sorted(BUILDERS)}")
    builder_cls = BUILDERS[name]
    valid_configs = [c.name for c in builder_cls.BUILDER_CONFIGS]
    if config is not None and config not in valid_configs:
        raise ValueError(
            f"unknown config {config!r} for data set {name!r}; valid configs: {valid_configs}"
        )
    builder = builder_cls(
        config_name=config,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        **overrides,
    )
    builder.download_and_prepare()
    return builder.as_dataset()
