# Closures over loop variables are timed inside the same iteration that defines them.
# ruff: noqa: B023
"""Prospector heads on the CPU: sketch and prospect time against the number of tokens.

For each graph kind (a sequence with offset 2, a square grid with 8-neighbourhoods and a
tenth of its tokens as background, an edge list: a random geometric-style contact graph of
about 6 edges per node) and each size from 1k to 1M tokens, a fitted head (``k`` concepts of
width ``d``) is timed on one datum:

* ``assign``: the concept of every token (nearest centroid);
* ``pairs``: the radius-``r`` ego pairs of the graph;
* ``sketch``: assign + pairs + counting (what ``head.sketch`` costs);
* ``prospect``: the whole ``head.prospect`` call (assign + pairs + map).

Median of ``--repeats`` runs after one warm-up, ``torch.get_num_threads()`` threads. The last
column divides the prospect time by the number of tokens: flat when the growth is linear.

    python benchmarks/prospector_scaling.py --out prospector_scaling.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from hazyzoo import ProspectorConfig, ProspectorModel
from hazyzoo.modeling.prospector_graphs import EdgeListGraph, GridGraph, SequenceGraph, sketch


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of ``fn()`` after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_graph(kind: str, n: int, gen: torch.Generator) -> tuple[Any, tuple[int, ...]]:
    """A graph of about ``n`` nodes and the embedding shape its datum has."""
    if kind == "sequence":
        return SequenceGraph(n, 2), (n,)
    if kind == "grid":
        side = max(2, round((n / 0.9) ** 0.5))
        mask = torch.rand(side, side, generator=gen) >= 0.1
        return GridGraph(side, side, mask), (side, side)
    # edges: each node linked to 3 nodes a short random hop ahead (a chain-like contact map)
    src = torch.arange(n).repeat_interleave(3)
    dst = (src + torch.randint(1, 8, (3 * n,), generator=gen)).clamp_max(n - 1)
    return EdgeListGraph(n, torch.stack([src, dst], 1)), (n,)


def fitted_head(d: int, k: int, radius: int) -> ProspectorModel:
    """A head fitted on small random data (the timings do not depend on the fitted values)."""
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(64, d, generator=gen) for _ in range(8)]
    for x in data[1::2]:
        x[10:14] += 3.0
    config = ProspectorConfig(hidden_size=d, num_concepts=k, radius=radius, variant="predictive")
    return ProspectorModel(config).fit(data, [0, 1] * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["sequence", "grid", "edges"])
    parser.add_argument("--radius", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--concepts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    print(
        f"{'graph':>9} {'r':>2} {'tokens':>8} {'pairs':>9} {'assign ms':>10} {'pairs ms':>9} "
        f"{'sketch ms':>10} {'prospect ms':>12} {'ns/token':>9}"
    )
    for radius in args.radius:
        head = fitted_head(args.dim, args.concepts, radius)
        for kind in args.kinds:
            for n in args.sizes:
                gen = torch.Generator().manual_seed(n)
                graph, shape = make_graph(kind, n, gen)
                x = torch.randn(*shape, args.dim, generator=gen)
                nodes = x[graph.mask] if isinstance(graph, GridGraph) else x
                num_pairs = graph.ego_pairs(radius)[0].numel()
                t_assign = timed(lambda: head.assign_concepts(nodes), args.repeats)
                t_pairs = timed(lambda: graph.ego_pairs(radius), args.repeats)
                t_sketch = timed(
                    lambda: sketch(
                        head.assign_concepts(nodes), graph.ego_pairs(radius), args.concepts
                    ),
                    args.repeats,
                )
                t_prospect = timed(lambda: head.prospect(x, graph), args.repeats)
                tokens = graph.num_nodes
                row = {
                    "graph": kind, "radius": radius, "tokens": tokens, "ego_pairs": num_pairs,
                    "assign_s": t_assign, "pairs_s": t_pairs, "sketch_s": t_sketch,
                    "prospect_s": t_prospect, "ns_per_token": t_prospect / tokens * 1e9,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{kind:>9} {radius:>2} {tokens:>8} {num_pairs:>9} {t_assign * 1e3:>10.2f} "
                    f"{t_pairs * 1e3:>9.2f} {t_sketch * 1e3:>10.2f} {t_prospect * 1e3:>12.2f} "
                    f"{row['ns_per_token']:>9.0f}",
                    flush=True,
                )
    if args.out:
        meta = {
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "dim": args.dim,
            "concepts": args.concepts,
            "repeats": args.repeats,
        }
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
