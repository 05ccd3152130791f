"""Mamba's selective scan. :mod:`.reference` is the spec (plain PyTorch, a loop over time in
float32); the Triton scan that will serve CUDA tensors is issue 10's next step, so no op is
registered with the dispatch yet."""

from hazyzoo.kernels.selective_scan.reference import selective_scan_reference, selective_state_step

__all__ = ["selective_scan_reference", "selective_state_step"]
