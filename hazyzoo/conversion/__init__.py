"""Converters from the papers' released checkpoints to hazyzoo checkpoints."""
