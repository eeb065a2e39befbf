"""Benchmark: training images/s of `dreamshift learn` (ERM) against a bare PyTorch loop.

Both train the same network (world-cnn, or --arch) with the same optimiser (AdamW), batch size
and images. The bare loop gets the training images already decoded and preprocessed into one
float tensor and runs only forward, cross-entropy, backward and the optimiser step. `learn`
does everything a run does: reads the manifest, decodes the PNG files, converts and augments
each batch (flip + crop), takes the step, checkpoints after every epoch and evaluates its
splits at the end. Printed: images/s of each, counted over the training images only, and their
ratio (aim >= 0.9), best of interleaved repeats; for `learn` both its training loop alone (the
per-epoch figure a run records) and the whole call (fixed costs weigh heavily on a run this
short). The same for a run on two training sources (the dataset and its paste-mode "dream",
a generated source) drawn by DataDream's weighted mix (``--train A --train B --mix weighted``):
the mixed loader must keep the loop's ratio. Also printed: the same bare loop under bfloat16
autocast, to show whether it helps on this CPU. Run: `make bench-learn` or
`.venv/bin/python bench/learn.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream
from dreamshift.learn.algorithms import Hparams
from dreamshift.learn.run import LearnConfig, learn
from dreamshift.models.architectures import ARCHITECTURES
from dreamshift.train.checkpoint import load_state


def bare_loop(
    arch: str, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, bf16: bool = False
) -> float:
    """Forward, loss, backward, step over preprocessed tensors (``epochs`` passes over ``x``).
    Returns seconds."""
    torch.manual_seed(0)
    net = ARCHITECTURES.get(arch)(10)
    hp = Hparams()
    opt = torch.optim.AdamW(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    steps = len(x) // batch
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def learn_run(
    root: Path, out: Path, arch: str, batch: int, epochs: int, train: tuple[str, ...] = ()
) -> tuple[float, float]:
    """Seconds of the whole `learn` call, and the images/s of its training loop alone (batch
    assembly, augmentation and update; the mean of the per-epoch figures it records). With
    ``train``, those sources in DataDream's weighted mix."""
    cfg = LearnConfig(algorithm="erm", arch=arch, epochs=epochs, batch_size=batch, train=train,
                      mix="weighted" if train else "concat")  # fmt: skip
    start = time.perf_counter()
    folder = learn(root, out, cfg, log=lambda *_: None)
    seconds = time.perf_counter() - start
    history = load_state(folder / "checkpoint.safetensors")["history"]
    return seconds, float(np.mean([h["train_images_per_s"] for h in history]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-size", type=int, default=2560, help="training images (2560)")
    parser.add_argument("--arch", default="world-cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        recipe = ShiftRecipe(
            train_size=args.train_size, val_per_group=1, test_per_group=1, anti_per_group=0
        )
        compose(ComposeConfig(recipe=recipe), root, workers=2, progress=False)
        rows = [r for r in ds.read_manifest(root).to_pylist() if r["split"] == "train"]
        classes = ds.read_dataset_json(root)["classes"]
        images = np.stack([np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = torch.tensor([classes.index(r["fg_class"]) for r in rows])
        n = (len(x) // args.batch) * args.batch * args.epochs  # images trained on
        print(
            f"{len(x)} training images of 64x64, {args.arch}, batch {args.batch}, "
            f"{args.epochs} epochs, {torch.get_num_threads()} threads"
        )
        generated = Path(tmp) / "generated"  # made by `dream` (paste mode): a generated source
        dream(DreamConfig(source=str(root), mode="paste", splits=("train",)), generated,
              progress=False)  # fmt: skip
        sources = (f"{root}:train", f"{generated}:train")
        bare, ours, loops, mixed = [], [], [], []
        for k in range(args.repeats):
            bare.append(bare_loop(args.arch, x, y, args.batch, args.epochs))
            seconds, loop = learn_run(
                root, Path(tmp) / f"runs{k}", args.arch, args.batch, args.epochs
            )
            ours.append(seconds)
            loops.append(loop)
            mixed.append(learn_run(root, Path(tmp) / f"mixed{k}", args.arch, args.batch,
                                   args.epochs, sources)[1])  # fmt: skip
        b, o, lo, mi = n / min(bare), n / min(ours), max(loops), max(mixed)
        few = x[: 4 * args.batch]  # bf16 can be far slower on CPUs without AMX: 4 steps
        bf16 = len(few) / bare_loop(args.arch, few, y, args.batch, 1, bf16=True)
        print(f"bare loop          {b:7.1f} img/s")
        print(f"bare loop, bf16    {bf16:7.1f} img/s   ratio to fp32 {bf16 / b:.2f}")
        print(f"dreamshift learn, training loop   {lo:7.1f} img/s   ratio {lo / b:.2f}")
        print(f"dreamshift learn, end to end      {o:7.1f} img/s   ratio {o / b:.2f}")
        print(f"learn, 2 sources weighted, loop   {mi:7.1f} img/s   ratio {mi / b:.2f}")


if __name__ == "__main__":
    main()
