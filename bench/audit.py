"""Benchmark: images/s of `dreamshift audit` against a bare `torch.no_grad()` forward loop.

Both run the same model at the same batch size over the same images. The bare loop gets the
images already decoded and preprocessed into one tensor and only runs the forward pass;
`audit` reads the manifest, decodes the PNG files (in threads, one batch ahead), preprocesses,
runs the model, maps labels, computes every metric with 1000 bootstrap resamples and writes
its records and predictions. Printed: images/s of each and the ratio (aim >= 0.9: decoding and
loading must not be the bottleneck), for the two shipped world classifiers (best of
interleaved repeats); and the audit with ForAug's foreground focus and background robustness
(`--mask-metrics`, the default on images with masks), whose extra passes cost what they cost.
Run: `make bench-audit` or `.venv/bin/python bench/audit.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreamshift.audit.evaluate import AuditConfig, audit
from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.models.loading import load_classifier


def bare_loop(model: str, images: torch.Tensor, batch: int) -> float:
    """Forward passes only, over preprocessed tensors. Returns seconds."""
    clf = load_classifier(model)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            clf.forward_head(clf.forward_features(images[i : i + batch]))
    return time.perf_counter() - start


def audit_run(model: str, root: Path, results: Path, batch: int, masks: bool = False) -> float:
    """Seconds of one audit; ``masks``: with ForAug's foreground focus and background
    robustness (a backward pass and two forward passes of recombined images per image)."""
    start = time.perf_counter()
    cfg = AuditConfig(models=(model,), batch_size=batch, mask_metrics=masks)
    audit(cfg, root, results, log=lambda *_: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-group", type=int, default=10, help="test images per group (10)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        recipe = ShiftRecipe(
            train_size=0, val_per_group=0, test_per_group=args.per_group, anti_per_group=0
        )
        compose(ComposeConfig(recipe=recipe), root, workers=2, progress=False)
        rows = [r for r in ds.read_manifest(root).to_pylist() if r["split"] == "test"]
        n = len(rows)
        print(f"{n} test images of 64x64, batch {args.batch}, {torch.get_num_threads()} threads")
        for model in ("world-cnn", "world-resnet18"):
            clf = load_classifier(model)
            decoded = np.stack(
                [np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows]
            )
            tensors = clf.preprocess(decoded)
            bare, ours, masked = [], [], []
            for k in range(args.repeats):
                bare.append(bare_loop(model, tensors, args.batch))
                ours.append(audit_run(model, root, Path(tmp) / f"r{k}.jsonl", args.batch))
                masked.append(audit_run(model, root, Path(tmp) / f"m{k}.jsonl", args.batch,
                                        masks=True))  # fmt: skip
            b, o, m = n / min(bare), n / min(ours), n / min(masked)
            print(
                f"{model:15s} bare forward {b:7.1f} img/s   dreamshift audit {o:7.1f} img/s   "
                f"ratio {o / b:.2f}   with the mask metrics {m:7.1f} img/s   ratio {m / b:.2f}"
            )


if __name__ == "__main__":
    main()
