"""Fast ops: a Triton kernel and a PyTorch reference each, picked by :mod:`.dispatch`."""
