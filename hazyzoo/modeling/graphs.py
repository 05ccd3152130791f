"""CUDA-graph replay of one decode step of a hazyzoo recurrent LM.

A decode step of a 36-layer hybrid launches over a thousand small kernels; at small and medium
batch sizes the launches, not the GPU, set the pace. Every state update in the decode path is in
place (linear-attention state, convolution tail, ring buffer and its write index), so one step can
be captured into a CUDA graph and replayed with new token ids and positions. The graph is tied to
the cache tensors it was captured with; a new cache (a new ``generate`` call) is captured anew.
Only caches whose layers all declare ``supports_graph_replay`` are replayed (a growing key/value
cache makes new tensors every step); the model checks that before calling the decoder.

With ``compile=True`` the captured step is the ``torch.compile``d decode step (inductor,
``fullgraph=True``, static shapes): inductor fuses the small per-layer ops (norms, residual adds,
gates and activations, casts) into generated Triton kernels around the matmuls and the zoo's own
kernels, so the graph replays fewer, fuller launches. The compile runs once per batch size, in
the capture's warm-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hazyzoo.modeling.cache import HazyCache

if TYPE_CHECKING:
    from hazyzoo.modeling.decoder_lm import HazyForCausalLM


class CudaGraphDecoder:
    """Captures ``model``'s single-token decode step for one cache and replays it.

    Use through :meth:`HazyForCausalLM.enable_cuda_graph_decode`; ``generate`` then replays the
    graph for every new token. Each capture first runs the step twice on a side stream (to compile
    kernels and initialise libraries) with the cache state saved and restored around it.
    """

    def __init__(self, model: HazyForCausalLM, compile: bool = False) -> None:
        self.model = model
        self.compile = compile
        self.graph: torch.cuda.CUDAGraph | None = None
        self._key: tuple | None = None
        self.captures = 0
        self._decode = (
            torch.compile(model.decode_step, fullgraph=True, dynamic=False)
            if compile
            else model.decode_step
        )

    def _signature(self, cache: HazyCache, input_ids: torch.Tensor) -> tuple:
        weights = self.model.get_output_embeddings().weight.data_ptr()
        tensors = (t.data_ptr() for t in cache.state_tensors())
        return (id(cache), weights, tuple(input_ids.shape), *tensors)

    def _step(self, cache: HazyCache) -> torch.Tensor:
        return self._decode(self.static_ids, self.static_positions, cache)

    def _capture(self, input_ids: torch.Tensor, cache: HazyCache) -> None:
        self.graph = None
        self.static_ids = input_ids.clone()
        self.static_positions = torch.zeros_like(input_ids)
        saved = [t.clone() for t in cache.state_tensors()]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step(cache)
        torch.cuda.current_stream().wait_stream(stream)
        for dst, src in zip(cache.state_tensors(), saved):
            dst.copy_(src)
        del saved
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_logits = self._step(cache)
        self.graph = graph
        self.captures += 1

    def __call__(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache: HazyCache
    ) -> torch.Tensor:
        """Logits [batch, 1, vocab] for ``input_ids`` [batch, 1]; updates ``cache`` in place."""
        if not cache.supports_graph_replay:
            raise ValueError("this cache has layers that CUDA-graph replay cannot serve")
        key = self._signature(cache, input_ids)
        if self.graph is None or key != self._key:
            self._capture(input_ids, cache)
            self._key = key
        self.static_ids.copy_(input_ids)
        self.static_positions.copy_(position_ids)
        self.graph.replay()
        return self.static_logits.clone()
