"""Token graphs of prospector heads: each structured graph's ego pairs equal a plain
breadth-first search, and sketches / maps equal a per-node hand count."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hazyzoo.modeling.prospector_graphs import (
    EdgeListGraph,
    GridGraph,
    SequenceGraph,
    ego_pairs_bfs,
    feature_names,
    num_features,
    pair_index,
    prospect_map,
    sketch,
)


def bfs_pairs(graph, radius: int) -> set[tuple[int, int]]:
    """Ego pairs by a Python breadth-first search from each node (the definition)."""
    src, dst = graph.neighbors()
    adjacency: dict[int, list[int]] = {v: [] for v in range(graph.num_nodes)}
    for a, b in zip(src.tolist(), dst.tolist()):
        adjacency[a].append(b)
    pairs = set()
    for v in range(graph.num_nodes):
        seen, frontier = {v}, [v]
        for _ in range(radius):
            frontier = [u for w in frontier for u in adjacency[w] if u not in seen]
            frontier = list(dict.fromkeys(frontier))
            seen.update(frontier)
        pairs |= {(v, u) for u in seen}
    return pairs


def as_set(pairs) -> set[tuple[int, int]]:
    src, dst = pairs
    out = set(zip(src.tolist(), dst.tolist()))
    assert len(out) == src.numel(), "a pair is listed twice"
    return out


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), offset=st.integers(1, 4), radius=st.integers(0, 4))
def test_sequence_ego_pairs_equal_bfs(n, offset, radius):
    graph = SequenceGraph(n, offset)
    expected = {(i, j) for i in range(n) for j in range(n) if abs(i - j) <= offset * radius}
    assert as_set(graph.ego_pairs(radius)) == expected == bfs_pairs(graph, radius)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    radius=st.integers(0, 3),
    density=st.floats(0.2, 1.0),
    seed=st.integers(0, 1000),
)
def test_grid_ego_pairs_equal_bfs(h, w, radius, density, seed):
    """Background tokens are not nodes and paths do not pass through them."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(h, w, generator=gen) < density
    mask[0, 0] = True
    graph = GridGraph(h, w, mask)
    assert graph.num_nodes == int(mask.sum())
    pairs = as_set(graph.ego_pairs(radius))
    assert pairs == bfs_pairs(graph, radius) == as_set(ego_pairs_bfs(graph, radius))


def test_grid_neighbourhood_is_eight_connected():
    graph = GridGraph(3, 3)
    src, dst = graph.neighbors()
    centre = 4
    assert sorted(dst[src == centre].tolist()) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert sorted(dst[src == 0].tolist()) == [1, 3, 4]


def test_grid_background_blocks_paths():
    """A wall of background: two hops around it are not enough."""
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 2] = False
    graph = GridGraph(3, 5, mask)
    pairs = as_set(graph.ego_pairs(3))
    left = {int(graph._node_id[r, c]) for r in range(3) for c in range(2)}
    right = {int(graph._node_id[r, c]) for r in range(3) for c in range(3, 5)}
    assert not any((a, b) in pairs for a in left for b in right)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 25), e=st.integers(0, 40), radius=st.integers(0, 4), seed=st.integers(0, 99)
)
def test_edge_list_ego_pairs_equal_bfs(n, e, radius, seed):
    gen = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n, (e, 2), generator=gen)
    graph = EdgeListGraph(n, edges)
    assert as_set(graph.ego_pairs(radius)) == bfs_pairs(graph, radius)
    # [2, E] reads the same as [E, 2]
    if e > 2:
        assert as_set(EdgeListGraph(n, edges.T).ego_pairs(radius)) == as_set(
            graph.ego_pairs(radius)
        )


def test_feature_layout():
    assert num_features(6, 0) == 6 and num_features(6, 1) == 6 + 21
    names = feature_names(3, 1)
    assert names == ["0", "1", "2", "(0, 0)", "(0, 1)", "(0, 2)", "(1, 1)", "(1, 2)", "(2, 2)"]
    a = torch.tensor([0, 1, 2, 2, 1])
    b = torch.tensor([2, 1, 0, 2, 2])
    assert pair_index(a, b, 3).tolist() == [2, 3, 2, 5, 4]


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_sketch_and_map_equal_hand_count(radius):
    gen = torch.Generator().manual_seed(radius)
    k, n = 4, 17
    graph = SequenceGraph(n, 2)
    concepts = torch.randint(0, k, (n,), generator=gen)
    pairs = graph.ego_pairs(radius) if radius else None
    kernel = torch.randn(num_features(k, radius), generator=gen, dtype=torch.float64)
    counts = sketch(concepts, pairs, k)
    names = feature_names(k, radius)
    expected = torch.zeros(len(names), dtype=torch.float64)
    expected_map = torch.zeros(n, dtype=torch.float64)
    ego = bfs_pairs(graph, radius)
    for v in range(n):
        expected[concepts[v]] += 1
        expected_map[v] += kernel[concepts[v]]
        if radius:
            for u in range(n):
                if (v, u) in ego:
                    lo, hi = sorted((int(concepts[v]), int(concepts[u])))
                    j = names.index(f"({lo}, {hi})")
                    expected[j] += 1
                    expected_map[v] += kernel[j]
    assert torch.equal(counts, expected)
    torch.testing.assert_close(prospect_map(concepts, pairs, kernel, k), expected_map)


def test_graph_errors():
    with pytest.raises(ValueError, match="num_nodes"):
        SequenceGraph(0)
    with pytest.raises(ValueError, match="offset"):
        SequenceGraph(5, offset=0)
    with pytest.raises(ValueError, match="mask must have shape"):
        GridGraph(3, 3, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        GridGraph(2, 2, torch.ones(2, 2))
    with pytest.raises(ValueError, match="no foreground"):
        GridGraph(2, 2, torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="outside"):
        EdgeListGraph(3, torch.tensor([[0, 3]]))
    with pytest.raises(TypeError, match="integer"):
        EdgeListGraph(3, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[E, 2\]"):
        EdgeListGraph(3, torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="radius"):
        SequenceGraph(4).ego_pairs(-1)
