"""``hazyzoo eval prospector``: localisation scores on hand-made maps, the planted-motif
generators, a tiny end-to-end run (maps localise the motifs, JSON/PNG written, the saved heads
reload with the Auto classes and give the same maps), ``--model DIR`` through the CLI, and the
``evaluate`` metric module."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModel

from hazyzoo.cli import main
from hazyzoo.evaluation import metric_path
from hazyzoo.evaluation.prospector import (
    DATA_JSON,
    RESULTS_JSON,
    RESULTS_PNG,
    localization_scores,
    planted_grids,
    planted_sequences,
    run_prospector,
)
from hazyzoo.modeling.prospector_graphs import GridGraph, SequenceGraph

TINY = dict(
    num_train=40, num_test=10, grid_train=24, grid_test=8, grid_size=16, noise=1.5,
    kmeans_n_init=2, progress=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prospector")
    return out, run_prospector(output_dir=out, **TINY)


# --- localization_scores ------------------------------------------------------------------
def test_perfect_and_reversed_maps():
    gt = torch.tensor([0, 0, 1, 1, 0, 1, 0, 0])
    perfect = localization_scores(gt * 2.0 + 0.5, gt)
    assert perfect["auprc"] == pytest.approx(1.0)
    assert perfect["ap"] == pytest.approx(1.0) and perfect["auroc"] == pytest.approx(1.0)
    assert perfect["num_tokens"] == 8 and perfect["num_positive"] == 3
    reversed_ = localization_scores(-gt.double(), gt)
    assert reversed_["auroc"] == pytest.approx(0.0)
    assert reversed_["ap"] < 0.5 and reversed_["auprc"] < 0.7
    # a rank-only metric: any increasing transform (the min-max rescaling) changes nothing
    m = torch.tensor([0.3, -2.0, 5.0, 1.0, 0.2, 0.9, 1.5, -1.0], dtype=torch.float64)
    assert localization_scores(m, gt) == localization_scores(m.exp() * 7 - 3, gt)


def test_against_sklearn_by_hand():
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

    gen = torch.Generator().manual_seed(3)
    m = torch.randn(50, generator=gen, dtype=torch.float64)
    gt = (torch.rand(50, generator=gen) < 0.3).long()
    s = ((m - m.min()) / (m.max() - m.min())).numpy()
    p, r, _ = precision_recall_curve(gt.numpy(), s)
    out = localization_scores(m, gt)
    assert out["auprc"] == pytest.approx(auc(r, p))
    assert out["ap"] == pytest.approx(average_precision_score(gt.numpy(), s))
    assert out["auroc"] == pytest.approx(roc_auc_score(gt.numpy(), s))


def test_nan_positions_are_dropped_with_their_ground_truth():
    grid = torch.tensor([[math.nan, 0.9, 0.1], [0.8, math.nan, 0.2]], dtype=torch.float64)
    gt = torch.tensor([[0, 1, 0], [1, 1, 0]])  # gt 1 under a NaN does not count
    out = localization_scores(grid, gt)
    assert out["auprc"] == pytest.approx(1.0) and out["auroc"] == pytest.approx(1.0)
    assert out["num_tokens"] == 4 and out["num_positive"] == 2
    with pytest.raises(ValueError, match="NaN everywhere"):
        localization_scores(torch.full((2, 2), math.nan), torch.tensor([[0, 1], [1, 0]]))


def test_a_constant_map_ranks_nothing():
    gt = torch.tensor([1, 0, 0, 0])
    out = localization_scores(torch.full((4,), 3.0), gt)
    assert out["auroc"] == pytest.approx(0.5)
    assert out["ap"] == pytest.approx(0.25)  # the positive fraction
    assert out["auprc"] == pytest.approx((1 + 0.25) / 2)  # trapezoid to (recall 0, prec 1)


def test_bad_inputs_raise_naming_the_problem():
    with pytest.raises(ValueError, match="all 0"):
        localization_scores(torch.rand(5), torch.zeros(5))
    with pytest.raises(ValueError, match="all 1"):
        localization_scores(torch.rand(5), torch.ones(5, dtype=torch.bool))
    # all-positive once the NaN background is dropped
    with pytest.raises(ValueError, match="cannot be scored"):
        localization_scores(torch.tensor([1.0, math.nan]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"shape \(4,\) but ground_truth has shape \(2, 2\)"):
        localization_scores(torch.rand(4), torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="only 0 and 1, got 2"):
        localization_scores(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="inf"):
        localization_scores(torch.tensor([0.0, math.inf]), torch.tensor([0, 1]))


# --- generators ---------------------------------------------------------------------------
def test_planted_sequences_shapes_labels_and_determinism():
    data = planted_sequences(12, hidden_size=16, seed=5)
    again = planted_sequences(12, hidden_size=16, seed=5)
    other = planted_sequences(12, hidden_size=16, seed=6)
    assert [d.label for d in data] == [i % 2 for i in range(12)]
    for d, e in zip(data, again):
        assert torch.equal(d.embeddings, e.embeddings) and torch.equal(
            d.ground_truth, e.ground_truth
        )
    assert not torch.equal(data[0].embeddings[:10], other[0].embeddings[:10])
    for d in data:
        n = d.embeddings.shape[0]
        assert (
            40 <= n <= 80 and d.embeddings.shape == (n, 16) and d.embeddings.dtype == torch.float32
        )
        assert isinstance(d.graph, SequenceGraph) and d.graph.num_nodes == n and d.graph.offset == 2
        assert d.ground_truth.shape == (n,) and d.ground_truth.dtype == torch.int64
        if d.label == 1:  # one run of 3-6 consecutive motif tokens
            idx = d.ground_truth.nonzero()[:, 0]
            assert 3 <= len(idx) <= 6 and int(idx[-1] - idx[0]) == len(idx) - 1
        else:
            assert d.ground_truth.sum() == 0
    # the world (concept centres) is fixed by centre_seed: decoys exist and are motif tokens
    clean = planted_sequences(40, hidden_size=16, seed=1, noise=0.0)
    motif = torch.cat([d.embeddings[d.ground_truth == 1] for d in clean if d.label == 1])
    motif_rows = {tuple(r.tolist()) for r in motif}
    assert len(motif_rows) == 2  # two motif centres
    decoys = [
        sum(tuple(r.tolist()) in motif_rows for r in d.embeddings) for d in clean if d.label == 0
    ]
    assert 0 < sum(c > 0 for c in decoys) < len(decoys) and max(decoys) <= 2
    with pytest.raises(ValueError, match="motif_length max"):
        planted_sequences(2, length=(5, 9), motif_length=(3, 6))
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        planted_sequences(2, seed=-1)


def test_planted_grids_shapes_labels_and_determinism():
    data = planted_grids(8, hidden_size=8, height=20, width=18, seed=2)
    again = planted_grids(8, hidden_size=8, height=20, width=18, seed=2)
    assert [d.label for d in data] == [0, 1] * 4
    for d, e in zip(data, again):
        assert torch.equal(d.embeddings, e.embeddings) and torch.equal(d.graph.mask, e.graph.mask)
    for d in data:
        assert d.embeddings.shape == (20, 18, 8) and d.ground_truth.shape == (20, 18)
        mask = d.graph.mask
        assert isinstance(d.graph, GridGraph) and (d.graph.height, d.graph.width) == (20, 18)
        assert not mask[0, 0] and not mask[-1, -1] and mask[10, 9]  # corners are background
        assert not (d.ground_truth.bool() & ~mask).any()  # the motif lies on foreground
        if d.label == 1:  # one s x s square, 3 <= s <= 5
            rows, cols = d.ground_truth.nonzero().unbind(1)
            s = int(rows.max() - rows.min()) + 1
            assert 3 <= s <= 5 and int(cols.max() - cols.min()) + 1 == s
            assert int(d.ground_truth.sum()) == s * s
        else:
            assert d.ground_truth.sum() == 0
    with pytest.raises(ValueError, match="motif_size max"):
        planted_grids(2, height=8, width=8, motif_size=(3, 5))


# --- end to end ---------------------------------------------------------------------------
def test_tiny_run_localises_the_motifs_and_saves_reloadable_heads(tiny_run):
    out, report = tiny_run
    results = report["results"]
    assert set(results) == {
        "sequence_predictive", "sequence_inferential", "grid_predictive", "grid_inferential"
    }  # fmt: skip
    for name, r in results.items():
        # a random map scores about the motif fraction (< 0.1 here); planted motifs are found
        assert r["mean_auprc"] > 0.8, (name, r["mean_auprc"])
        assert r["mean_auroc"] > 0.9 and r["mean_ap"] > 0.75, name
        assert r["num_scored"] == len(r["per_datum"]["auprc"]) > 0 and r["num_skipped"] == 0
        assert r["accuracy"] >= 0.7
    on_disk = json.loads((out / RESULTS_JSON).read_text())
    assert (
        on_disk["results"]["grid_inferential"]["mean_auprc"]
        == results["grid_inferential"]["mean_auprc"]
    )
    assert (out / RESULTS_PNG).stat().st_size > 5000
    # the saved heads reload with the Auto classes and give the same maps
    test = planted_grids(4, height=16, width=16, noise=1.5, seed=123)
    fitted_again = run_prospector(("grid",), ("inferential",), output_dir=out / "again", **TINY)[
        "results"
    ]["grid_inferential"]
    assert fitted_again["per_datum"] == results["grid_inferential"]["per_datum"]  # deterministic
    for name in ("grid_inferential", "sequence_predictive"):
        model = AutoModel.from_pretrained(out / name)
        assert type(model).__name__ == "ProspectorModel" and model.is_fitted
        meta = json.loads((out / name / DATA_JSON).read_text())
        assert meta["setting"] == name.split("_")[0]
    model = AutoModel.from_pretrained(out / "grid_inferential")
    direct = AutoModel.from_pretrained(out / "again" / "grid_inferential")
    for d in test:
        a, b = model.prospect(d.embeddings, d.graph), direct.prospect(d.embeddings, d.graph)
        assert torch.equal(torch.isnan(a), ~d.graph.mask)
        torch.testing.assert_close(a, b, equal_nan=True)


def test_cli_model_dir_evaluates_a_saved_head(tiny_run, tmp_path, capsys):
    out, report = tiny_run
    again = tmp_path / "again"
    argv = ["eval", "prospector", "--model", str(out / "sequence_predictive"), "--out", str(again)]
    argv += ["--num-test", "10", "--no-progress"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "sequence" in table and "predictive" in table and "AUPRC" in table
    (only,) = json.loads((again / RESULTS_JSON).read_text())["results"].values()
    # same seed, same data settings: the run's test data, so the run's numbers
    expected = report["results"]["sequence_predictive"]
    assert only["mean_auprc"] == pytest.approx(expected["mean_auprc"], abs=1e-12)
    assert only["accuracy"] == pytest.approx(expected["accuracy"])
    assert (again / RESULTS_PNG).is_file()
    # another seed: fresh test data of the same world, still localised
    assert main([*argv[:-3], "--seed", "7", "--num-test", "10", "--no-progress"]) == 0
    capsys.readouterr()
    (fresh,) = json.loads((again / RESULTS_JSON).read_text())["results"].values()
    assert fresh["mean_auprc"] > 0.7 and fresh["per_datum"] != only["per_datum"]


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["eval", "prospector", "--settings", "graph", "--out", str(tmp_path)]) != 0
    assert "settings must be from sequence, grid" in capsys.readouterr().err
    assert main(["eval", "prospector", "--variants", "lasso", "--out", str(tmp_path)]) != 0
    assert "variants must be from predictive, inferential" in capsys.readouterr().err
    assert main(["eval", "prospector", "--model", str(tmp_path / "nope")]) != 0
    assert "no config.json" in capsys.readouterr().err


# --- the evaluate metric module -----------------------------------------------------------
def test_the_evaluate_metric_module_matches_localization_scores(tiny_run):
    import evaluate

    out, _ = tiny_run
    model = AutoModel.from_pretrained(out / "grid_predictive")
    data = [d for d in planted_grids(6, height=16, width=16, noise=1.5, seed=9) if d.label == 1]
    maps = [model.prospect(d.embeddings, d.graph) for d in data]
    direct = [localization_scores(m, d.ground_truth) for m, d in zip(maps, data)]
    metric = evaluate.load(metric_path("localization_auprc"))
    res = metric.compute(
        predictions=[m.tolist() for m in maps],
        references=[d.ground_truth.tolist() for d in data],
        return_per_datum=True,
    )
    for key in ("auprc", "ap", "auroc"):
        assert res[key] == pytest.approx(sum(s[key] for s in direct) / len(direct), abs=1e-12)
        assert res["per_datum"][key] == pytest.approx([s[key] for s in direct], abs=1e-12)
    assert res["num_scored"] == len(data) and res["num_skipped"] == 0
    # flat maps, an unscorable datum skipped and counted (or an error when asked)
    flat = metric.compute(
        predictions=[[0.1, 0.9, 0.8, 0.2], [0.5, 0.4, 0.3, 0.2]],
        references=[[0, 1, 1, 0], [0, 0, 0, 0]],
    )
    assert flat == {"auprc": 1.0, "ap": 1.0, "auroc": 1.0, "num_scored": 1, "num_skipped": 1}
    with pytest.raises(ValueError, match="all 0"):
        metric.compute(predictions=[[0.5, 0.4]], references=[[0, 0]], skip_unscorable=False)
    with pytest.raises(ValueError, match="none of the 1 data can be scored"):
        metric.compute(predictions=[[0.5, 0.4]], references=[[1, 1]])
    with pytest.raises(ValueError, match=r"shape \(3,\) but references\[0\] has shape \(2,\)"):
        metric.compute(predictions=[[0.5, 0.4, 0.1]], references=[[1, 0]])
    path = metric_path("localization_auprc")
    for line in open(f"{path}/localization_auprc.py").read().splitlines():
        if line.startswith(("import ", "from ")):  # evaluate's import scanner: one per line
            assert "," not in line, line
