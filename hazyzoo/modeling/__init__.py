"""Model classes, mixers and caches."""
