"""``hazyzoo eval prospector``: how well prospector heads localise planted motifs.

A prospector head (Machiraju et al., "Prospector heads: generalized feature attribution for
large models & data") is fitted on datum-level labels only; its per-token map should still
light up the tokens that carry the class-1 evidence. This runner checks that on synthetic data
whose evidence is known, generated locally and deterministically (no download):

* **sequences** (:func:`planted_sequences`): documents of 40-80 token embeddings drawn around a
  few background concept centres; every class-1 document carries a *motif*, a run of 3-6
  consecutive tokens drawn from dedicated motif centres (token ground truth 1), and about half
  of the class-0 documents carry one or two isolated *decoy* motif tokens (ground truth 0), so
  a motif concept alone does not separate the classes: the motif-motif concept pairs do.
* **grids** (:func:`planted_grids`): ``H x W`` patch embeddings of a "tissue" region (an
  ellipse; the corners are background, skipped through ``GridGraph(h, w, mask)``) textured by
  background concepts; class-1 grids carry a square motif of motif-centre patches, class-0
  grids isolated decoy patches.

For each setting and each variant (``predictive``, ``inferential``) it fits a
:class:`~hazyzoo.ProspectorModel` on a training split, prospects the class-1 test data and
scores every map against the ground truth with :func:`localization_scores` (the paper's
protocol: min-max rescaled map, AUPRC as the area under scikit-learn's precision-recall curve,
plus average precision and AUROC). It prints a table, writes ``prospector_results.json`` and
``prospector_results.png`` (a sequence map as a coloured strip over its tokens, a grid map next
to its ground truth) and saves every head under ``OUT/<setting>_<variant>/`` (loadable with
``AutoModel.from_pretrained``) with ``prospector_data.json``, the settings of its data.
``--model DIR`` evaluates a saved head on freshly generated test data of its setting.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hazyzoo.modeling.prospector_graphs import GridGraph, SequenceGraph, TokenGraph

__all__ = [
    "DATA_JSON",
    "RESULTS_JSON",
    "RESULTS_PNG",
    "SETTINGS",
    "VARIANTS",
    "PlantedDatum",
    "add_arguments",
    "evaluate_prospector",
    "format_table",
    "localization_scores",
    "planted_grids",
    "planted_sequences",
    "run_from_args",
    "run_prospector",
]

RESULTS_JSON = "prospector_results.json"
RESULTS_PNG = "prospector_results.png"
DATA_JSON = "prospector_data.json"
SETTINGS = ("sequence", "grid")
VARIANTS = ("predictive", "inferential")
METRIC_KEYS = ("auprc", "ap", "auroc")


# --- scoring ------------------------------------------------------------------------------
def localization_scores(attribution: Tensor, ground_truth: Tensor) -> dict[str, float | int]:
    """AUPRC, AP and AUROC of one datum's attribution map against its token ground truth.

    Positions where ``attribution`` is NaN (the background of a grid map) are dropped, with
    their ground truth. The rest of the map is min-max rescaled to [0, 1] (a constant map
    becomes all zeros: it ranks nothing, so AUROC is 0.5, AP the positive fraction ``p`` and
    the trapezoidal AUPRC ``(1 + p) / 2``). Then ``auprc`` is ``sklearn.metrics.auc(recall,
    precision)`` over ``precision_recall_curve`` (the prospector paper's number), ``ap``
    ``average_precision_score`` and ``auroc`` ``roc_auc_score``.

    Args:
        attribution: The map, any shape (``[n]``, ``[H, W]``), floating point.
        ground_truth: 0/1 (or bool) of the same shape, 1 on the tokens that carry the evidence.

    Returns:
        ``{"auprc", "ap", "auroc"}`` as floats, and ``num_tokens`` / ``num_positive`` (ints)
        counted over the scored (non-NaN) positions.

    Raises:
        ValueError: shapes differ, the ground truth is not 0/1, the map holds inf, no position
            is left, or the scored ground truth is all 0 or all 1 (the ranking metrics are
            undefined there; :func:`run_prospector` skips such data and counts them).
    """
    from sklearn.metrics import (
        auc,
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
    )

    att = torch.as_tensor(attribution).detach().cpu()
    gt = torch.as_tensor(ground_truth).detach().cpu()
    if tuple(att.shape) != tuple(gt.shape):
        raise ValueError(
            f"attribution has shape {tuple(att.shape)} but ground_truth has shape "
            f"{tuple(gt.shape)}: they must match token for token"
        )
    if not (att.is_floating_point() or att.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"attribution must be a real-valued map, got dtype {att.dtype}")
    att = att.double().reshape(-1)
    gt = gt.double().reshape(-1)
    bad = gt[(gt != 0) & (gt != 1)]
    if bad.numel():
        raise ValueError(f"ground_truth must hold only 0 and 1, got {bad[0].item()!r}")
    keep = ~torch.isnan(att)
    att, gt = att[keep], gt[keep]
    if torch.isinf(att).any():
        raise ValueError("attribution holds inf: a map must be finite (NaN marks background)")
    if att.numel() == 0:
        raise ValueError("attribution is NaN everywhere: no token is left to score")
    positives = int(gt.sum().item())
    if positives in (0, gt.numel()):
        raise ValueError(
            f"ground_truth is all {int(gt[0].item())} over the {gt.numel()} scored tokens: "
            "AUPRC/AP/AUROC need both 0 and 1 (such data cannot be scored)"
        )
    lo, hi = att.min(), att.max()
    scores = (att - lo) / (hi - lo) if hi > lo else torch.zeros_like(att)
    y, s = gt.long().numpy(), scores.numpy()
    precision, recall, _ = precision_recall_curve(y, s)
    return {
        "auprc": float(auc(recall, precision)),
        "ap": float(average_precision_score(y, s)),
        "auroc": float(roc_auc_score(y, s)),
        "num_tokens": int(gt.numel()),
        "num_positive": positives,
    }


# --- synthetic data -----------------------------------------------------------------------
@dataclass
class PlantedDatum:
    """One synthetic datum: ``embeddings`` (``[n, d]`` or ``[H, W, d]``, float32), its
    ``graph``, its datum ``label`` (0/1) and ``ground_truth`` (int64, the shape of the map:
    1 on motif tokens, 0 elsewhere, decoys and grid background included)."""

    embeddings: Tensor
    graph: TokenGraph
    label: int
    ground_truth: Tensor


def _gen(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    """A uniform int in ``[low, high]`` (both included)."""
    return int(torch.randint(low, high + 1, (1,), generator=gen).item())


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_range(name: str, value: Any, minimum: int) -> tuple[int, int]:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}") from None
    _check_int(f"{name}[0]", lo, minimum)
    _check_int(f"{name}[1]", hi, lo)
    return lo, hi


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _centres(centre_seed: int, dim: int, num_background: int, num_motif: int) -> tuple:
    """The concept centres of a synthetic world: background, motif, and (grids) glass."""
    gen = _gen(centre_seed)
    background = torch.randn(num_background, dim, generator=gen)
    motif = torch.randn(num_motif, dim, generator=gen)
    glass = torch.randn(1, dim, generator=gen)
    return background, motif, glass


def _spaced_positions(
    count: int, candidates: Tensor, distance: Any, spacing: int, gen: torch.Generator
) -> list[int]:
    """Up to ``count`` of ``candidates`` (indices), pairwise ``distance >= spacing``."""
    chosen: list[int] = []
    for i in torch.randperm(len(candidates), generator=gen).tolist():
        c = int(candidates[i])
        if all(distance(c, o) >= spacing for o in chosen):
            chosen.append(c)
            if len(chosen) == count:
                break
    return chosen


def planted_sequences(
    num_data: int,
    *,
    hidden_size: int = 64,
    length: tuple[int, int] = (40, 80),
    num_background: int = 5,
    num_motif_centres: int = 2,
    motif_length: tuple[int, int] = (3, 6),
    decoy_fraction: float = 0.5,
    max_decoys: int = 2,
    decoy_spacing: int = 5,
    noise: float = 2.0,
    offset: int = 2,
    seed: int = 0,
    centre_seed: int = 0,
) -> list[PlantedDatum]:
    """Synthetic documents with a planted motif in class 1 (the text setting).

    Datum ``i`` has label ``i % 2``. Its length is uniform in ``length``; every token is a
    concept centre plus Gaussian noise of standard deviation ``noise`` (centres are standard
    normal, so neighbouring centres lie about ``sqrt(2 * hidden_size)`` apart). Background
    tokens come from ``num_background`` centres, uniformly. At the default ``noise=2.0`` a token
    lies about ``2 * sqrt(64) = 16`` from its centre, more than the ``sqrt(128) ~ 11`` between
    centres, so some tokens get the wrong concept and the maps are good but not perfect. A
    class-1 datum carries one run of ``motif_length`` consecutive tokens, each from one of
    ``num_motif_centres`` motif centres (ground truth 1). With probability ``decoy_fraction``
    a class-0 datum carries 1 to ``max_decoys`` single motif tokens at least
    ``decoy_spacing`` positions apart (ground truth 0): they share the motif's concepts but not
    its concept pairs (at the default spacing, for a radius up to 2 with ``offset=2``).

    Args:
        num_data: Number of documents.
        hidden_size: Width of the token embeddings.
        length: ``(min, max)`` tokens per document.
        num_background: Background concept centres.
        num_motif_centres: Motif concept centres.
        motif_length: ``(min, max)`` length of the planted run.
        decoy_fraction: Fraction of class-0 documents with decoys.
        max_decoys: Most decoy tokens in a document.
        decoy_spacing: Least distance between two decoys.
        noise: Standard deviation of the token noise.
        offset: ``SequenceGraph`` offset of the returned graphs (2 in the text setting).
        seed: Seed of the documents (lengths, concepts, noise, motif and decoy placement).
        centre_seed: Seed of the concept centres (the "world"; a head fitted on one world
            should be evaluated on data of the same centres).

    Returns:
        One :class:`PlantedDatum` per document (``[n, hidden_size]`` embeddings,
        ``SequenceGraph(n, offset)``, ground truth ``[n]``).
    """
    _check_int("num_data", num_data, 1)
    _check_int("hidden_size", hidden_size, 1)
    _check_int("num_background", num_background, 1)
    _check_int("num_motif_centres", num_motif_centres, 1)
    _check_int("max_decoys", max_decoys, 1)
    _check_int("decoy_spacing", decoy_spacing, 1)
    _check_int("offset", offset, 1)
    lo, hi = _check_range("length", length, 2)
    mlo, mhi = _check_range("motif_length", motif_length, 1)
    if mhi >= lo:
        raise ValueError(
            f"motif_length max ({mhi}) must be below the shortest length ({lo}): a motif "
            "document needs background tokens too"
        )
    _check_fraction("decoy_fraction", decoy_fraction)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    background, motif, _ = _centres(centre_seed, hidden_size, num_background, num_motif_centres)
    gen = _gen(seed)
    data = []
    for i in range(num_data):
        label = i % 2
        n = _randint(lo, hi, gen)
        concept = torch.randint(num_background, (n,), generator=gen)
        centres = background[concept]
        gt = torch.zeros(n, dtype=torch.int64)
        if label == 1:
            run = _randint(mlo, mhi, gen)
            start = _randint(0, n - run, gen)
            which = torch.randint(num_motif_centres, (run,), generator=gen)
            centres[start : start + run] = motif[which]
            gt[start : start + run] = 1
        elif torch.rand(1, generator=gen).item() < decoy_fraction:
            count = _randint(1, max_decoys, gen)
            spots = _spaced_positions(
                count, torch.arange(n), lambda a, b: abs(a - b), decoy_spacing, gen
            )
            which = torch.randint(num_motif_centres, (len(spots),), generator=gen)
            centres[spots] = motif[which]
        tokens = centres + noise * torch.randn(n, hidden_size, generator=gen)
        data.append(PlantedDatum(tokens, SequenceGraph(n, offset), label, gt))
    return data


def planted_grids(
    num_data: int,
    *,
    hidden_size: int = 64,
    height: int = 24,
    width: int = 24,
    num_background: int = 5,
    num_motif_centres: int = 2,
    motif_size: tuple[int, int] = (3, 5),
    decoy_fraction: float = 0.5,
    max_decoys: int = 3,
    decoy_spacing: int = 3,
    texture_cell: int = 4,
    noise: float = 2.0,
    seed: int = 0,
    centre_seed: int = 0,
) -> list[PlantedDatum]:
    """Synthetic patch grids with a planted square motif in class 1 (the image setting).

    Datum ``i`` has label ``i % 2``. Its foreground ("tissue") is a random ellipse around the
    centre whose semi-axes are 38-50% of the grid's sides, so the corners (and, for the
    smaller ellipses, the border) are background: the returned ``GridGraph(height, width,
    mask)`` skips them. The foreground is textured by background concepts in
    ``texture_cell x texture_cell`` blocks; background patches come from a separate "glass"
    centre. A class-1 grid carries one ``s x s`` square of motif-centre patches (``s``
    uniform in ``motif_size``, the whole square on foreground; ground truth 1). With
    probability ``decoy_fraction`` a class-0 grid carries 1 to ``max_decoys`` single motif
    patches at least ``decoy_spacing`` apart in Chebyshev distance (ground truth 0).

    Args:
        num_data: Number of grids.
        hidden_size: Width of the patch embeddings.
        height: Rows of the grid.
        width: Columns of the grid.
        num_background: Background (texture) concept centres.
        num_motif_centres: Motif concept centres.
        motif_size: ``(min, max)`` side of the planted square.
        decoy_fraction: Fraction of class-0 grids with decoys.
        max_decoys: Most decoy patches in a grid.
        decoy_spacing: Least Chebyshev distance between two decoys (3: no decoy lies in
            another's 8-neighbourhood, nor shares a neighbour with it).
        texture_cell: Side of the blocks of one background concept.
        noise: Standard deviation of the patch noise.
        seed: Seed of the grids (masks, textures, noise, motif and decoy placement).
        centre_seed: Seed of the concept centres (see :func:`planted_sequences`).

    Returns:
        One :class:`PlantedDatum` per grid (``[height, width, hidden_size]`` embeddings,
        ``GridGraph(height, width, mask)``, ground truth ``[height, width]``, 0 on background).
    """
    _check_int("num_data", num_data, 1)
    _check_int("hidden_size", hidden_size, 1)
    _check_int("height", height, 4)
    _check_int("width", width, 4)
    _check_int("num_background", num_background, 1)
    _check_int("num_motif_centres", num_motif_centres, 1)
    _check_int("max_decoys", max_decoys, 1)
    _check_int("decoy_spacing", decoy_spacing, 1)
    _check_int("texture_cell", texture_cell, 1)
    slo, shi = _check_range("motif_size", motif_size, 1)
    if shi > min(height, width) // 2:
        raise ValueError(
            f"motif_size max ({shi}) must be at most half the grid's shorter side "
            f"({min(height, width) // 2}) so that the square fits on the foreground"
        )
    _check_fraction("decoy_fraction", decoy_fraction)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    background, motif, glass = _centres(centre_seed, hidden_size, num_background, num_motif_centres)
    gen = _gen(seed)
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    cols = torch.arange(width, dtype=torch.float64)[None, :]
    cells = (math.ceil(height / texture_cell), math.ceil(width / texture_cell))
    data = []
    for i in range(num_data):
        label = i % 2
        u = torch.rand(4, generator=gen, dtype=torch.float64)
        cy = (height - 1) / 2 + (u[0].item() - 0.5) * 0.1 * height
        cx = (width - 1) / 2 + (u[1].item() - 0.5) * 0.1 * width
        ry, rx = (0.38 + 0.12 * u[2].item()) * height, (0.38 + 0.12 * u[3].item()) * width
        mask = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0
        coarse = torch.randint(num_background, cells, generator=gen)
        concept = coarse.repeat_interleave(texture_cell, 0).repeat_interleave(texture_cell, 1)
        centres = background[concept[:height, :width]]
        centres[~mask] = glass[0]
        gt = torch.zeros(height, width, dtype=torch.int64)
        if label == 1:
            side = _randint(slo, shi, gen)
            # every top-left corner whose whole square lies on foreground
            windows = mask.unfold(0, side, 1).unfold(1, side, 1).all(-1).all(-1)
            corners = windows.nonzero()
            if len(corners) == 0:  # pragma: no cover - the ellipse always fits the square
                raise RuntimeError(f"no {side} x {side} square fits on grid {i}'s foreground")
            y0, x0 = corners[_randint(0, len(corners) - 1, gen)].tolist()
            which = torch.randint(num_motif_centres, (side, side), generator=gen)
            centres[y0 : y0 + side, x0 : x0 + side] = motif[which]
            gt[y0 : y0 + side, x0 : x0 + side] = 1
        elif torch.rand(1, generator=gen).item() < decoy_fraction:
            count = _randint(1, max_decoys, gen)
            fg = mask.reshape(-1).nonzero()[:, 0]

            def chebyshev(a: int, b: int) -> int:
                return max(abs(a // width - b // width), abs(a % width - b % width))

            spots = _spaced_positions(count, fg, chebyshev, decoy_spacing, gen)
            which = torch.randint(num_motif_centres, (len(spots),), generator=gen)
            flat = centres.reshape(-1, hidden_size)
            flat[spots] = motif[which]
        tokens = centres + noise * torch.randn(height, width, hidden_size, generator=gen)
        data.append(PlantedDatum(tokens, GridGraph(height, width, mask), label, gt))
    return data


# --- fitting and evaluation ---------------------------------------------------------------
def _generate(setting: str, num_data: int, seed: int, data_settings: dict) -> list[PlantedDatum]:
    if setting == "sequence":
        return planted_sequences(num_data, seed=seed, **data_settings)
    if setting == "grid":
        return planted_grids(num_data, seed=seed, **data_settings)
    raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")


def _split_seeds(seed: int) -> tuple[int, int]:
    """Sample seeds of the training and test data of a run with ``seed`` (its world, the
    concept centres, is ``centre_seed = seed``)."""
    return 1009 * seed + 1, 1009 * seed + 2


@torch.no_grad()
def evaluate_prospector(model: Any, data: list[PlantedDatum], progress: bool = False) -> dict:
    """Localisation of ``model``'s maps on the class-1 data of ``data`` and its datum-level
    accuracy on all of them.

    Returns the mean ``auprc`` / ``ap`` / ``auroc`` over the scored class-1 data,
    ``num_scored``, ``num_skipped`` (class-1 data whose ground truth is all 0 or all 1),
    ``accuracy``, ``per_datum`` (each metric's list, in data order) and ``maps`` (the class-1
    maps, for plotting; not JSON)."""
    positives = [d for d in data if d.label == 1]
    per: dict[str, list[float]] = {key: [] for key in METRIC_KEYS}
    maps, skipped = [], 0
    iterator: Any = positives
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(positives, desc="prospect", unit="datum", leave=False)
    for datum in iterator:
        attribution = model.prospect(datum.embeddings, datum.graph)
        maps.append(attribution)
        try:
            scores = localization_scores(attribution, datum.ground_truth)
        except ValueError:
            if datum.ground_truth.min() != datum.ground_truth.max():
                raise
            skipped += 1
            continue
        for key in METRIC_KEYS:
            per[key].append(scores[key])
    predicted = model.predict([d.embeddings for d in data], [d.graph for d in data])
    labels = torch.tensor([d.label for d in data])
    result: dict[str, Any] = {
        f"mean_{key}": (sum(v) / len(v) if v else float("nan")) for key, v in per.items()
    }
    result.update(
        num_scored=len(per["auprc"]),
        num_skipped=skipped,
        accuracy=float((predicted.cpu() == labels).double().mean()),
        num_test=len(data),
        per_datum=per,
        maps=maps,
    )
    return result


def format_table(results: dict[str, dict]) -> str:
    """The localisation metrics per setting and variant, one row each."""
    header = (
        f"{'setting':<10}{'variant':<13}{'AUPRC':>8}{'AP':>8}{'AUROC':>8}{'acc':>7}"
        f"{'scored':>8}{'skipped':>9}"
    )
    rows = [header, "-" * len(header)]
    for r in results.values():
        rows.append(
            f"{r['setting']:<10}{r['variant']:<13}{r['mean_auprc']:>8.3f}{r['mean_ap']:>8.3f}"
            f"{r['mean_auroc']:>8.3f}{r['accuracy']:>7.3f}{r['num_scored']:>8d}"
            f"{r['num_skipped']:>9d}"
        )
    return "\n".join(rows)


def _plot(path: Path, panels: dict[str, dict]) -> None:
    """One PNG: per setting, the first class-1 test datum's ground truth and each variant's
    map (sequences as strips over the tokens, grids as images; grid background blank)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "drawing prospector_results.png needs matplotlib: pip install 'hazyzoo[eval]'"
        ) from err
    seq = [p for p in panels.values() if p["setting"] == "sequence"]
    grid = [p for p in panels.values() if p["setting"] == "grid"]
    ncols = max(len(grid) + 1, 1)
    nrows = (1 if seq else 0) + (1 if grid else 0)
    fig = plt.figure(figsize=(4.0 * max(ncols, 2), 1.6 * len(seq) + 4.0 * bool(grid) + 1.2))
    heights = ([0.7 * (len(seq) + 1)] if seq else []) + ([2.4] if grid else [])
    outer = fig.add_gridspec(nrows, 1, height_ratios=heights, hspace=0.45)
    row = 0
    if seq:
        inner = outer[row].subgridspec(len(seq) + 1, 1, hspace=1.4)
        row += 1
        gt = seq[0]["ground_truth"].double()
        ax = fig.add_subplot(inner[0])
        ax.imshow(gt[None].numpy(), aspect="auto", cmap="Greys", vmin=0, vmax=1)
        ax.set_title("sequence: ground truth (planted motif in black)", fontsize=8, loc="left")
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        motif = gt.nonzero()[:, 0].tolist()
        for j, p in enumerate(seq, start=1):
            ax = fig.add_subplot(inner[j])
            m = p["map"].double()
            im = ax.imshow(m[None].numpy(), aspect="auto", cmap="magma")
            ax.plot(motif, [0.0] * len(motif), "v", color="cyan", markersize=4)
            ax.set_title(
                f"sequence, {p['variant']} map (AUPRC {p['auprc']:.3f}; triangles: motif)",
                fontsize=8,
                loc="left",
            )
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    if grid:
        inner = outer[row].subgridspec(1, len(grid) + 1, wspace=0.3)
        gt = grid[0]["ground_truth"].double()
        background = torch.isnan(grid[0]["map"])
        shown = gt.clone()
        shown[background] = float("nan")
        ax = fig.add_subplot(inner[0])
        ax.imshow(shown.numpy(), cmap="Greys", vmin=-0.25, vmax=1)
        ax.set_title(
            "grid: ground truth (motif black,\nforeground grey, background blank)", fontsize=8
        )
        ax.set_xticks([])
        ax.set_yticks([])
        for j, p in enumerate(grid, start=1):
            ax = fig.add_subplot(inner[j])
            im = ax.imshow(p["map"].double().numpy(), cmap="magma")
            ax.contour(gt.numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_title(f"grid, {p['variant']} map\n(AUPRC {p['auprc']:.3f})", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _panel(setting: str, variant: str, test: list[PlantedDatum], result: dict) -> dict:
    datum = next(d for d in test if d.label == 1)  # maps[0] is its map
    m = result["maps"][0]
    return {
        "setting": setting,
        "variant": variant,
        "map": m,
        "ground_truth": datum.ground_truth,
        "auprc": localization_scores(m, datum.ground_truth)["auprc"],
    }


def _data_settings(setting: str, args: dict) -> dict:
    """The generator keywords of ``setting`` from the run's options."""
    common = {
        "hidden_size": args["hidden_size"],
        "noise": args["noise"],
        "centre_seed": args["centre_seed"],
    }
    if setting == "sequence":
        return {**common, "length": tuple(args["length"]), "offset": args["sequence_offset"]}
    return {**common, "height": args["grid_size"], "width": args["grid_size"]}


def run_prospector(
    settings: tuple[str, ...] = SETTINGS,
    variants: tuple[str, ...] = VARIANTS,
    *,
    num_train: int = 200,
    num_test: int = 100,
    grid_train: int = 100,
    grid_test: int = 60,
    hidden_size: int = 64,
    length: tuple[int, int] = (40, 80),
    grid_size: int = 24,
    noise: float = 2.0,
    num_concepts: int = 8,
    radius: int = 1,
    sequence_offset: int = 2,
    alpha: float = 0.05,
    tau: float = 1.0,
    l1_ratio: float = 0.5,
    C: float = 1.0,
    kmeans_n_init: int = 10,
    kmeans_max_tokens: int | None = 20000,
    seed: int = 0,
    output_dir: str | Path = "prospector_results",
    model_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit (or, with ``model_dir``, load) and evaluate prospector heads on planted motifs.

    Each setting draws its training data with one sample seed and its test data with another
    (both from ``seed``; the concept centres from ``centre_seed = seed``), then each variant
    is fitted on the same training data. Writes ``prospector_results.json``,
    ``prospector_results.png`` and each head (``OUT/<setting>_<variant>/`` with
    ``prospector_data.json``). ``model_dir`` evaluates one saved head instead: on test data
    generated from the data settings saved with it (or, without ``prospector_data.json``, the
    default settings at the head's ``hidden_size``) and from ``seed`` (the run's seed gives the
    run's test data).

    Returns the report written to JSON: ``protocol``, ``results`` (per
    ``<setting>_<variant>``) and ``seconds``.
    """
    from hazyzoo import ProspectorConfig, ProspectorModel

    _check_int("seed", seed, 0)
    for name, value in (
        ("num_train", num_train), ("num_test", num_test), ("grid_train", grid_train),
        ("grid_test", grid_test),
    ):  # fmt: skip
        _check_int(name, value, 2)
    out = Path(output_dir)
    start = time.perf_counter()
    options = {
        "hidden_size": hidden_size,
        "noise": noise,
        "centre_seed": seed,
        "length": list(length),
        "grid_size": grid_size,
        "sequence_offset": sequence_offset,
    }
    results: dict[str, dict] = {}
    panels: dict[str, dict] = {}
    train_seed, test_seed = _split_seeds(seed)
    if model_dir is not None:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"--model {model_dir}: no config.json (not a saved head)")
        from transformers import AutoModel

        model = AutoModel.from_pretrained(model_dir)
        if not isinstance(model, ProspectorModel):
            raise ValueError(
                f"--model {model_dir} holds a {type(model).__name__}, not a prospector"
            )
        if not model.is_fitted:
            raise ValueError(f"--model {model_dir}: the prospector head is not fitted")
        meta_path = model_dir / DATA_JSON
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            setting, data_settings = meta["setting"], meta["data"]
            if "length" in data_settings:
                data_settings["length"] = tuple(data_settings["length"])
        else:
            setting = model.config.graph
            if setting not in SETTINGS:
                raise ValueError(
                    f"--model {model_dir}: config.graph={setting!r} and no {DATA_JSON}; "
                    f"planted data exist for {SETTINGS} only"
                )
            data_settings = _data_settings(
                setting, {**options, "hidden_size": model.config.hidden_size}
            )
        if data_settings["hidden_size"] != model.config.hidden_size:
            raise ValueError(
                f"--model {model_dir}: its data are {data_settings['hidden_size']}-wide but the "
                f"head reads hidden_size={model.config.hidden_size}"
            )
        size = num_test if setting == "sequence" else grid_test
        test = _generate(setting, size, test_seed, data_settings)
        variant = model.config.variant
        name = f"{setting}_{variant}"
        result = evaluate_prospector(model, test, progress=progress)
        panels[name] = _panel(setting, variant, test, result)
        results[name] = {"setting": setting, "variant": variant, "model_dir": str(model_dir)}
        results[name].update({k: v for k, v in result.items() if k != "maps"})
        protocol_data = {setting: data_settings}
    else:
        bad = [s for s in settings if s not in SETTINGS]
        if bad or not settings:
            raise ValueError(f"settings must be from {', '.join(SETTINGS)}; got {list(settings)}")
        bad = [v for v in variants if v not in VARIANTS]
        if bad or not variants:
            raise ValueError(f"variants must be from {', '.join(VARIANTS)}; got {list(variants)}")
        protocol_data = {}
        for setting in settings:
            data_settings = _data_settings(setting, options)
            protocol_data[setting] = data_settings
            n_train, n_test = (
                (num_train, num_test) if setting == "sequence" else (grid_train, grid_test)
            )
            train = _generate(setting, n_train, train_seed, data_settings)
            test = _generate(setting, n_test, test_seed, data_settings)
            for variant in variants:
                config = ProspectorConfig(
                    hidden_size=hidden_size,
                    num_concepts=num_concepts,
                    radius=radius,
                    graph=setting,
                    sequence_offset=sequence_offset,
                    variant=variant,
                    alpha=alpha,
                    tau=tau,
                    l1_ratio=l1_ratio,
                    C=C,
                    kmeans_n_init=kmeans_n_init,
                    kmeans_max_tokens=kmeans_max_tokens,
                    seed=seed,
                )
                name = f"{setting}_{variant}"
                if progress:
                    print(f"fitting {name} on {n_train} {setting}s ...", flush=True)
                t0 = time.perf_counter()
                model = ProspectorModel(config).fit(
                    [d.embeddings for d in train],
                    [d.label for d in train],
                    [d.graph for d in train],
                )
                fit_seconds = time.perf_counter() - t0
                result = evaluate_prospector(model, test, progress=progress)
                panels[name] = _panel(setting, variant, test, result)
                results[name] = {"setting": setting, "variant": variant}
                results[name].update({k: v for k, v in result.items() if k != "maps"})
                results[name]["fit_seconds"] = fit_seconds
                model.save_pretrained(out / name)
                meta = {"setting": setting, "data": data_settings, "seed": seed}
                (out / name / DATA_JSON).write_text(json.dumps(meta, indent=1))
    report = {
        "protocol": {
            "data": protocol_data,
            "sizes": {
                "sequence": {"train": num_train, "test": num_test},
                "grid": {"train": grid_train, "test": grid_test},
            },
            "head": {
                "num_concepts": num_concepts,
                "radius": radius,
                "alpha": alpha,
                "tau": tau,
                "l1_ratio": l1_ratio,
                "C": C,
            },
            "seed": seed,
            "scores": "per class-1 test datum: min-max rescaled map, AUPRC = auc(recall, "
            "precision) of precision_recall_curve, AP, AUROC; means over scored data",
            "model_dir": None if model_dir is None else str(model_dir),
        },
        "results": results,
        "seconds": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_JSON).write_text(json.dumps(report, indent=1))
    _plot(out / RESULTS_PNG, panels)
    return report


# --- command line -------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hazyzoo eval prospector``."""
    parser.add_argument(
        "--out", "--output-dir", dest="out", default="prospector_results", metavar="DIR"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), metavar="SETTING")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--num-concepts", type=int, default=8)
    parser.add_argument("--radius", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=0.05, help="inferential: FWER level")
    parser.add_argument("--tau", type=float, default=1.0, help="inferential: min |log2 FC|")
    parser.add_argument("--C", type=float, default=1.0, help="predictive: inverse regularisation")
    parser.add_argument("--num-train", type=int, default=200, help="training sequences")
    parser.add_argument("--num-test", type=int, default=100, help="test sequences")
    parser.add_argument("--grid-train", type=int, default=100, help="training grids")
    parser.add_argument("--grid-test", type=int, default=60, help="test grids")
    parser.add_argument("--grid-size", type=int, default=24, help="grids are SIZE x SIZE")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--noise", type=float, default=2.0, help="token noise std")
    parser.add_argument("--kmeans-n-init", type=int, default=10, help="k-means restarts")
    parser.add_argument("--model", default=None, metavar="DIR", help="evaluate a saved head")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``hazyzoo eval prospector`` and print the table."""
    for name in ("num_concepts", "hidden_size", "grid_size", "kmeans_n_init"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.radius < 0:
        raise ValueError(f"--radius must be >= 0, got {args.radius}")
    report = run_prospector(
        tuple(args.settings),
        tuple(args.variants),
        num_train=args.num_train,
        num_test=args.num_test,
        grid_train=args.grid_train,
        grid_test=args.grid_test,
        hidden_size=args.hidden_size,
        grid_size=args.grid_size,
        noise=args.noise,
        num_concepts=args.num_concepts,
        radius=args.radius,
        alpha=args.alpha,
        tau=args.tau,
        C=args.C,
        kmeans_n_init=args.kmeans_n_init,
        seed=args.seed,
        output_dir=args.out,
        model_dir=args.model,
        progress=not args.no_progress,
    )
    print(format_table(report["results"]))
    print(f"wrote {Path(args.out) / RESULTS_JSON} and {Path(args.out) / RESULTS_PNG}")
    return 0
