"""``hazyzoo eval vq``: straight-through vs the rotation trick on a VQ-VAE, side by side.

It trains one :class:`~hazyzoo.VQVAEModel` per gradient estimator with ``transformers.Trainer``
(same data, same initial weights, same batch order), then measures on held-out images:

* reconstruction MSE (pixels in [0, 1]);
* codebook usage: the fraction of the codebook the codes of 256 images use, averaged over
  consecutive batches of 256 test images (the reference's measure);
* codebook perplexity over the whole test set (``exp`` of the entropy of the code histogram);
* quantization error: the mean squared distance between encoder outputs and their codes.

Default data: the 8x8 grey digits scikit-learn ships (1,797 images, no download), scaled to
[0, 1] and upsampled to ``--image-size`` (16 by default). It writes ``vq_results.json``, a table
and ``vq_results.png`` (originals above each estimator's reconstructions), and saves each model
(``OUT/<estimator>/``, loadable with ``AutoModel.from_pretrained``). ``--model DIR`` evaluates a
saved model instead of training.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

__all__ = [
    "add_arguments",
    "digits_images",
    "evaluate_vq",
    "format_table",
    "run_from_args",
    "run_vq",
    "train_vq",
]

RESULTS_JSON = "vq_results.json"
RESULTS_PNG = "vq_results.png"
USAGE_BATCH = 256


def digits_images(image_size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as ``[N, 1, S, S]`` floats in [0, 1] (bilinear upsampling when
    ``S > 8``): ``(train 1437, test 360)``, split by a fixed permutation."""
    from sklearn.datasets import load_digits

    if image_size < 8 or image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        x = x.clamp(0, 1)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x = x[order]
    return x[:1437], x[1437:]


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i]}


@torch.no_grad()
def evaluate_vq(model: Any, images: torch.Tensor, batch_size: int = USAGE_BATCH) -> dict:
    """The four metrics of the module docstring for ``model`` on ``images`` (eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    k = model.config.codebook_size
    sq_err, n_pixels, q_err, n_latents, usages = 0.0, 0, 0.0, 0, []
    counts = torch.zeros(k, device=device)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        out = model(x)
        sq_err += float(((out.reconstruction.float() - x) ** 2).sum())
        n_pixels += x.numel()
        latents = model.encode(x)
        q = out.quantized
        q_err += float(((latents - q) ** 2).sum(1).sum())
        n_latents += out.indices.numel()
        batch_counts = torch.bincount(out.indices.flatten(), minlength=k).float()
        counts += batch_counts
        if len(x) == batch_size or not usages:  # full batches of 256 (or the only batch)
            usages.append(float((batch_counts > 0).float().mean()))
    probs = counts / counts.sum()
    perplexity = math.exp(float(-(probs * torch.log(probs.clamp(min=1e-12))).sum()))
    return {
        "reconstruction_mse": sq_err / n_pixels,
        "codebook_usage": sum(usages) / len(usages),
        "perplexity": perplexity,
        "quantization_error": q_err / n_latents,
        "codes_used": int((counts > 0).sum()),
        "codebook_size": k,
        "num_images": len(images),
    }


def train_vq(
    config: Any,
    train_images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    output_dir: str | Path,
    device: str = "cpu",
) -> Any:
    """A fresh :class:`~hazyzoo.VQVAEModel` (initial weights from ``seed``) trained with
    ``transformers.Trainer``; returns the model in eval mode."""
    from transformers import Trainer, TrainingArguments

    from hazyzoo import VQVAEModel

    torch.manual_seed(seed)
    model = VQVAEModel(config)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=False,
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )
    Trainer(model=model, args=args, train_dataset=_Images(train_images)).train()
    return model.eval()


def format_table(results: dict[str, dict]) -> str:
    """The metrics per estimator, one row each."""
    header = f"{'estimator':<16}{'recon MSE':>11}{'usage':>8}{'perplexity':>12}{'quant err':>11}"
    rows = [header, "-" * len(header)]
    for name, r in results.items():
        rows.append(
            f"{name:<16}{r['reconstruction_mse']:>11.5f}{r['codebook_usage']:>8.3f}"
            f"{r['perplexity']:>12.1f}{r['quantization_error']:>11.4f}"
        )
    return "\n".join(rows)


def _plot(path: Path, originals: torch.Tensor, recons: dict[str, torch.Tensor]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install 'hazyzoo[eval]')")
        return False
    rows = [("original", originals), *recons.items()]
    n = originals.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0))
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run_vq(
    estimators: tuple[str, ...] = ("ste", "rotation"),
    *,
    image_size: int = 16,
    epochs: int = 15,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    codebook_size: int = 128,
    codebook_dim: int = 16,
    channels: tuple[int, ...] = (32, 64),
    seed: int = 0,
    output_dir: str | Path = "vq_results",
    device: str = "cpu",
    model_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or, with ``model_dir``, load) and evaluate; writes JSON, PNG and the models."""
    from hazyzoo import VQVAEConfig, VQVAEModel

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = digits_images(image_size, seed)
    results: dict[str, dict] = {}
    recons: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    if model_dir is not None:
        model = VQVAEModel.from_pretrained(model_dir).to(device).eval()
        if model.config.in_channels != 1:
            raise ValueError(
                f"{model_dir}: the digits are grey images; the model expects {model.config.in_channels} channels"
            )
        name = f"{model.config.gradient_estimator} ({model_dir})"
        results[name] = evaluate_vq(model, test)
        with torch.no_grad():
            recons[name] = model(test[:12].to(device)).reconstruction.cpu()
    else:
        unknown = [e for e in estimators if e not in ("ste", "rotation", "rotation_vqgan")]
        if unknown or not estimators:
            raise ValueError(
                f"estimators must be from ste, rotation, rotation_vqgan; got {estimators}"
            )
        for estimator in estimators:
            config = VQVAEConfig(
                in_channels=1,
                channels=list(channels),
                num_res_blocks=1,
                codebook_size=codebook_size,
                codebook_dim=codebook_dim,
                gradient_estimator=estimator,
                kmeans_init=True,  # both start from k-means of the first batch's latents
                norm_groups=8,
            )
            t0 = time.perf_counter()
            model = train_vq(
                config,
                train,
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                seed=seed,
                output_dir=out / f"trainer-{estimator}",
                device=device,
            )
            metrics = evaluate_vq(model, test)
            metrics["train_seconds"] = time.perf_counter() - t0
            results[estimator] = metrics
            model.save_pretrained(out / estimator)
            with torch.no_grad():
                recons[estimator] = model(test[:12].to(device)).reconstruction.cpu()
    report = {
        "protocol": {
            "data": f"sklearn digits, {image_size}x{image_size}, 1437 train / 360 test",
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "codebook_size": codebook_size,
            "codebook_dim": codebook_dim,
            "channels": list(channels),
            "seed": seed,
            "usage": f"fraction of codes used per {USAGE_BATCH} test images",
            "model_dir": None if model_dir is None else str(model_dir),
        },
        "results": results,
        "seconds": time.perf_counter() - start,
    }
    (out / RESULTS_JSON).write_text(json.dumps(report, indent=1))
    _plot(out / RESULTS_PNG, test[:12], recons)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hazyzoo eval vq``."""
    parser.add_argument("--estimators", nargs="+", default=["ste", "rotation"])
    parser.add_argument("--model", default=None, metavar="DIR", help="evaluate a saved VQVAEModel")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--codebook-size", type=int, default=128)
    parser.add_argument("--codebook-dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="vq_results", metavar="DIR")
    parser.add_argument("--device", default="cpu")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``hazyzoo eval vq`` and print the table."""
    for name in ("epochs", "batch_size", "codebook_size", "codebook_dim"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    report = run_vq(
        tuple(args.estimators),
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        codebook_size=args.codebook_size,
        codebook_dim=args.codebook_dim,
        seed=args.seed,
        output_dir=args.output_dir,
        device=args.device,
        model_dir=args.model,
    )
    print(format_table(report["results"]))
    print(f"wrote {Path(args.output_dir) / RESULTS_JSON} and {RESULTS_PNG}")
    return 0
