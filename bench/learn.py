"""Benchmark: training images/s of `dreamshift learn` (ERM) against two baselines.

All train the same network (world-cnn, or --arch) with the same optimiser (AdamW), batch size
and images. The bare loop gets the training images already decoded and preprocessed into one
float tensor (channels-last in memory, as ``permute`` leaves it, the layout `learn`'s loader
also delivers) and runs only forward, cross-entropy, backward and the optimiser step. The
hand-written loader is what a user writes without dreamshift: a torch Dataset over the same
PNG files (PIL decode, [-1, 1], random flip and 4-pixel padded crop per image) and a
DataLoader with 2 worker processes, shuffled. `learn` does everything a run does: reads the
manifest, streams the PNG files through its loader (2 workers, sha256 checked), takes the
step, checkpoints after every epoch and evaluates its splits at the end.

Printed: images/s of each, counted over the training images only, and the ratios (aims: >= 0.9
of the bare loop, >= 1.0 of the hand-written loader), best of interleaved repeats; for `learn`
both its training loop alone (the per-epoch figure a run records) and the whole call (fixed
costs weigh heavily on a run this short). The same for a run on two training sources (the
dataset and its paste-mode "dream", a generated source) drawn by DataDream's weighted mix
(``--train A --train B --mix weighted``): the mixed loader must keep the loop's ratio. Also
printed: the same bare loop under bfloat16 autocast, to show whether it helps on this CPU, and
`learn --recombine world` (ForAug's recombination in the loader workers; aim: >= 0.8 of learn
without it).
Run: `make bench-learn` or `.venv/bin/python bench/learn.py`.
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
from dreamshift.learn.hparams import Hparams
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


class PngImages(torch.utils.data.Dataset):
    """What a user writes by hand: decode, scale to [-1, 1], flip and padded crop per image."""

    def __init__(self, paths: list[Path], labels: list[int]):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as img:
            x = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float()
        x = x / 127.5 - 1
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        h, w = x.shape[1:]
        return F.pad(x, (4, 4, 4, 4))[:, dy : dy + h, dx : dx + w], self.labels[i]


def handwritten_loop(
    arch: str, paths: list[Path], labels: list[int], batch: int, epochs: int
) -> float:
    """The bare loop fed by :class:`PngImages` through a DataLoader with 2 workers. Seconds."""
    torch.manual_seed(0)
    net = ARCHITECTURES.get(arch)(10)
    hp = Hparams()
    opt = torch.optim.AdamW(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    images = PngImages(paths, labels)
    data = torch.utils.data.DataLoader(
        images, batch_size=batch, shuffle=True, num_workers=2, drop_last=True,
        persistent_workers=True,
    )  # fmt: skip
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in data:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def learn_run(
    root: Path,
    out: Path,
    arch: str,
    batch: int,
    epochs: int,
    train: tuple[str, ...] = (),
    recombine: str = "",
) -> tuple[float, float]:
    """Seconds of the whole `learn` call, and the images/s of its training loop alone (batch
    assembly, augmentation and update; the mean of the per-epoch figures it records). With
    ``train``, those sources in DataDream's weighted mix; with ``recombine``, ForAug's
    recombination on backgrounds from it."""
    cfg = LearnConfig(algorithm="erm", arch=arch, epochs=epochs, batch_size=batch, train=train,
                      mix="weighted" if train else "concat", recombine=recombine)  # fmt: skip
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
        classes = ds.DatasetMeta.read(root).to_dict()["classes"]
        paths = [root / r["path"] for r in rows]
        labels = [classes.index(r["fg_class"]) for r in rows]
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
        bare, hand, ours, loops, mixed, recombined = [], [], [], [], [], []
        for k in range(args.repeats):
            bare.append(bare_loop(args.arch, x, y, args.batch, args.epochs))
            hand.append(handwritten_loop(args.arch, paths, labels, args.batch, args.epochs))
            seconds, loop = learn_run(
                root, Path(tmp) / f"runs{k}", args.arch, args.batch, args.epochs
            )
            ours.append(seconds)
            loops.append(loop)
            mixed.append(learn_run(root, Path(tmp) / f"mixed{k}", args.arch, args.batch,
                                   args.epochs, sources)[1])  # fmt: skip
            recombined.append(learn_run(root, Path(tmp) / f"recombined{k}", args.arch,
                                        args.batch, args.epochs, recombine="world")[1])  # fmt: skip
        b, h, o, lo, mi = n / min(bare), n / min(hand), n / min(ours), max(loops), max(mixed)
        re = max(recombined)
        few = x[: 4 * args.batch]  # bf16 can be far slower on CPUs without AMX: 4 steps
        bf16 = len(few) / bare_loop(args.arch, few, y, args.batch, 1, bf16=True)
        print(f"bare loop          {b:7.1f} img/s")
        print(f"bare loop, bf16    {bf16:7.1f} img/s   ratio to fp32 {bf16 / b:.2f}")
        print(f"hand-written DataLoader, 2 workers {h:7.1f} img/s   ratio {h / b:.2f}")
        print(f"dreamshift learn, training loop   {lo:7.1f} img/s   ratio {lo / b:.2f}   "
              f"to the hand-written loader {lo / h:.2f}")  # fmt: skip
        print(f"dreamshift learn, end to end      {o:7.1f} img/s   ratio {o / b:.2f}")
        print(f"learn, 2 sources weighted, loop   {mi:7.1f} img/s   ratio {mi / b:.2f}")
        print(f"learn --recombine world, loop     {re:7.1f} img/s   ratio {re / b:.2f}   "
              f"to learn without {re / lo:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
