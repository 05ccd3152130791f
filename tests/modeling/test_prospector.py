"""Prospector heads: golden parity with the released K2 code, save/load, Auto classes,
determinism, datum-level prediction and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from hazyzoo import ProspectorConfig, ProspectorModel
from hazyzoo.modeling.prospector_graphs import EdgeListGraph, GridGraph, SequenceGraph
from tests.conftest import golden_dir

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def golden():
    folder = golden_dir("prospector_heads")
    tensors = load_file(folder / "prospector_golden.safetensors")
    config = json.loads((folder / "config.json").read_text())
    return tensors, config


def golden_head(info: dict) -> ProspectorModel:
    hp = info["hparams"]
    kwargs = dict(hidden_size=6, num_concepts=6, radius=info["r"], variant=info["variant"])
    if info["variant"] == "predictive":
        kwargs["l1_ratio"] = hp["lambda"]
    else:
        kwargs.update(alpha=hp["alpha"], tau=hp["tau"])
    return ProspectorModel(ProspectorConfig(**kwargs))


def rescaled_scores(maps, gt):
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve

    m = (maps - maps.min()) / (maps.max() - maps.min())
    precision, recall, _ = precision_recall_curve(gt.numpy(), m.numpy())
    return auc(recall, precision), average_precision_score(gt.numpy(), m.numpy())


def test_golden_concepts(golden):
    """k-means (K2's token order) gives the reference centroids and every token's concept."""
    t, config = golden
    head = golden_head(config["runs"]["r1_inferential"])
    head.fit_concepts(t["kmeans_fit_array"])
    torch.testing.assert_close(head.centroids, t["kmeans_centers"], rtol=0, atol=1e-12)
    emb = t["token_embeddings"]
    sprites = torch.stack([head.assign_concepts(emb[g]) for g in range(emb.shape[0])])
    assert torch.equal(sprites, t["sprites"])


@pytest.mark.parametrize(
    "run",
    [
        "r0_predictive",
        "r0_inferential",
        "r0_inferential_masked",
        "r1_predictive",
        "r1_inferential",
        "r1_inferential_masked",
        "r2_predictive",
        "r2_inferential",
        "r2_inferential_masked",
    ],
)
def test_golden_run(golden, run):
    """Sketches and TF-IDF exactly; kernels and maps to float64 rounding (the predictive saga
    fit is refit on the stored rows in their order: with scikit-learn 1.9.1, the reference's
    version, it is bit-exact; other versions are allowed the README's loose tolerance); the
    per-datum AUPRC / AP of the class-1 documents exactly."""
    import sklearn

    t, config = golden
    info = config["runs"][run]
    head = golden_head(info)
    head.fit_concepts(t["kmeans_fit_array"])
    emb, labels = t["token_embeddings"], t["graph_labels"]
    order = t[f"{run}_rows_graph_index"]
    graphs = [SequenceGraph(emb.shape[1], 2) for _ in order]
    counts = head.sketch([emb[g] for g in order], graphs)
    assert head.feature_names == (info["feature_keys"])
    assert torch.equal(counts, t[f"{run}_X_counts"])
    head.fit_kernel(counts, labels[order])
    torch.testing.assert_close(head.tfidf(counts), t[f"{run}_X_tfidf"], rtol=0, atol=1e-15)
    exact = info["variant"] == "inferential" or sklearn.__version__ == "1.9.1"
    tol = 1e-12 if exact else 5e-2
    torch.testing.assert_close(head.kernel, t[f"{run}_kernel_B"], rtol=0, atol=tol)
    if info["variant"] == "predictive":
        torch.testing.assert_close(head.intercept, t[f"{run}_intercept"], rtol=0, atol=tol)
    maps = torch.stack([head.prospect(emb[g]) for g in range(emb.shape[0])])
    torch.testing.assert_close(
        maps, t[f"{run}_prospect_maps"], rtol=0, atol=1e-11 if exact else 1.0
    )
    if not exact:
        return
    class1 = [g for g in range(emb.shape[0]) if labels[g] == 1]
    scores = [rescaled_scores(maps[g], t["token_gt"][g]) for g in class1]
    assert [s[0] for s in scores] == pytest.approx(t[f"{run}_auprc_class1"].tolist(), abs=1e-12)
    assert [s[1] for s in scores] == pytest.approx(t[f"{run}_ap_class1"].tolist(), abs=1e-12)
    assert sum(s[0] for s in scores) / len(scores) == pytest.approx(info["mean_auprc"], abs=1e-12)


def planted(n_data: int = 12, n: int = 24, d: int = 6, seed: int = 0):
    """Small sequences: class-1 data hold a run of tokens from a motif centre."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, d, generator=gen) * 3
    data, labels, truth = [], [], []
    for i in range(n_data):
        which = torch.randint(0, 3, (n,), generator=gen)
        gt = torch.zeros(n, dtype=torch.long)
        if i % 2:
            start = int(torch.randint(0, n - 4, (1,), generator=gen))
            which[start : start + 3] = 3
            gt[start : start + 3] = 1
        data.append(centres[which] + 0.3 * torch.randn(n, d, generator=gen))
        labels.append(i % 2)
        truth.append(gt)
    return data, labels, truth


@pytest.mark.parametrize("variant", ["predictive", "inferential"])
def test_fit_locates_planted_motif_and_predicts(variant):
    data, labels, truth = planted()
    head = ProspectorModel(ProspectorConfig.tiny(variant=variant, alpha=1.0, tau=0.5)).fit(
        data, labels
    )
    assert head.is_fitted
    for x, y, gt in zip(data, labels, truth):
        if y:
            scores = head.prospect(x)
            assert scores.shape == (x.shape[0],)
            assert scores[gt == 1].min() > scores[gt == 0].max()
    assert head.predict(data).tolist() == labels
    proba = head.predict_proba(data)
    assert proba.shape == (len(data),) and ((proba > 0) & (proba < 1)).all()


def test_fitting_twice_gives_the_same_head():
    data, labels, _ = planted()
    config = ProspectorConfig.tiny(variant="predictive")
    a = ProspectorModel(config).fit(data, labels).state_dict()
    b = ProspectorModel(config).fit(data, labels).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_load_bit_exact_and_auto(tmp_path):
    data, labels, _ = planted()
    head = ProspectorModel(ProspectorConfig.tiny(variant="inferential", alpha=1.0)).fit(
        data, labels
    )
    head.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "README.md").is_file()
    assert "prospector head" in (tmp_path / "README.md").read_text()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ProspectorConfig)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is ProspectorModel and loaded.is_fitted
    state, again = head.state_dict(), loaded.state_dict()
    assert all(torch.equal(state[k], again[k]) and state[k].dtype == again[k].dtype for k in state)
    assert torch.equal(loaded.prospect(data[1]), head.prospect(data[1]))
    assert torch.equal(loaded.predict_proba(data), head.predict_proba(data))


def test_forward_output_and_grid_and_edges():
    gen = torch.Generator().manual_seed(1)
    grids, labels = [], []
    for i in range(8):
        grid = torch.randn(6, 7, 6, generator=gen)
        if i % 2:
            grid[2:4, 2:4] += 4.0
        grids.append(grid)
        labels.append(i % 2)
    mask = torch.ones(6, 7, dtype=torch.bool)
    mask[0] = False
    graphs = [GridGraph(6, 7, mask) for _ in grids]
    head = ProspectorModel(ProspectorConfig.tiny(graph="grid", alpha=1.0, tau=0.1)).fit(
        grids, labels, graphs
    )
    out = head(grids[:2], graphs[:2])
    assert len(out.attributions) == 2 and out.attributions[0].shape == (6, 7)
    assert (
        torch.isnan(out.attributions[0][0]).all() and not torch.isnan(out.attributions[0][1:]).any()
    )
    assert out.concepts[0].shape == (mask.sum().item(),)
    assert out.sketches.shape == (2, head.config.num_features)
    torch.testing.assert_close(out.probabilities, torch.sigmoid(out.logits))
    # The default graph of an [H, W, d] datum is the full grid.
    assert head.prospect(grids[1]).shape == (6, 7)
    # Edge lists: nodes in embedding order.
    edges = torch.tensor([[0, 1], [1, 2], [2, 3]])
    scores = head.prospect(torch.randn(4, 6, generator=gen), EdgeListGraph(4, edges))
    assert scores.shape == (4,)


def test_bad_inputs():
    data, labels, _ = planted(n_data=4, n=5)
    head = ProspectorModel(ProspectorConfig.tiny())
    with pytest.raises(RuntimeError, match="not fitted"):
        head.prospect(data[0])
    with pytest.raises(ValueError, match="single class"):
        head.fit(data, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        head.fit(data, [0, 1, 2, 1])
    with pytest.raises(ValueError, match="4 data but 3 labels"):
        head.fit(data, [0, 1, 0])
    with pytest.raises(
        ValueError, match="graph of embeddings\\[1\\] has 7 nodes but the datum has 5"
    ):
        head.fit(data, labels, [SequenceGraph(5), SequenceGraph(7), None, None])
    big = ProspectorModel(ProspectorConfig.tiny(num_concepts=30))
    with pytest.raises(
        ValueError, match="num_concepts \\(30\\) is larger than the number of tokens \\(20\\)"
    ):
        big.fit(data, labels)
    with pytest.raises(ValueError, match=r"\[n, 6\]"):
        head.fit([torch.randn(5, 7)] * 4, labels)
    with pytest.raises(TypeError, match="sequence of per-datum tensors"):
        head.fit(torch.randn(4, 5, 6), labels)
    with pytest.raises(ValueError, match="no tokens"):
        head.fit([torch.randn(0, 6), *data[1:]], labels)
    edges_head = ProspectorModel(ProspectorConfig.tiny(graph="edges"))
    with pytest.raises(ValueError, match="needs a graph"):
        edges_head.fit(data, labels)
    with pytest.raises(ValueError, match="GridGraph of 3 x 3"):
        head.fit([torch.randn(3, 3, 6)] * 4, labels, [GridGraph(3, 4)] * 4)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_concepts": 0}, "num_concepts"),
        ({"radius": -1}, "radius"),
        ({"variant": "bayes"}, "variant"),
        ({"graph": "tree"}, "graph"),
        ({"l1_ratio": 1.5}, "l1_ratio"),
        ({"alpha": 0}, "alpha"),
        ({"kmeans_max_tokens": 2}, "kmeans_max_tokens"),
    ],
)
def test_bad_configs(overrides, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ProspectorConfig.tiny(**overrides)


def test_kmeans_subset_is_seeded():
    data, labels, _ = planted()
    config = ProspectorConfig.tiny(kmeans_max_tokens=50, variant="predictive")
    a = ProspectorModel(config).fit(data, labels)
    b = ProspectorModel(config).fit(data, labels)
    assert torch.equal(a.centroids, b.centroids)
    full = ProspectorModel(ProspectorConfig.tiny(variant="predictive")).fit(data, labels)
    assert not torch.equal(a.centroids, full.centroids)


def test_predictive_warns_when_a_weighted_feature_has_negative_idf(caplog):
    """A concept present in every training datum has IDF ln(n / (n + 1)) < 0: its TF-IDF
    runs opposite to its counts, which the fit must say (the map would read reversed)."""
    gen = torch.Generator().manual_seed(3)
    centres = torch.tensor([[0.0] * 6, [8.0] * 6, [-8.0] * 6])
    data, labels = [], []
    for i in range(16):
        which = torch.zeros(20, dtype=torch.long)
        which[: 2 + 6 * (i % 2)] = 1  # concept 1 in every datum, more of it in class 1
        which[-1] = 2
        data.append(centres[which] + 0.1 * torch.randn(20, 6, generator=gen))
        labels.append(i % 2)
    head = ProspectorModel(ProspectorConfig.tiny(num_concepts=3, radius=0, variant="predictive"))
    with caplog.at_level("WARNING"):
        head.fit(data, labels)
    assert (head.idf < 0).all()
    assert "IDF ln(n / (1 + n)) is negative" in caplog.text
