"""Config checks, re-exported from :mod:`hazyzoo.validation` (the one validation layer)."""

from hazyzoo.validation import (
    check_bool,
    check_choice,
    check_divides,
    check_float,
    check_int,
    check_layer_indices,
    check_model_type,
    check_positive,
    check_token_id,
    known_config_names,
    reject_unknown_config_kwargs,
)

__all__ = [
    "check_bool",
    "check_choice",
    "check_divides",
    "check_float",
    "check_int",
    "check_layer_indices",
    "check_model_type",
    "check_positive",
    "check_token_id",
    "known_config_names",
    "reject_unknown_config_kwargs",
]
