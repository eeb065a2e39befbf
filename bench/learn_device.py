"""Benchmark for a GPU: `dreamshift learn` against a bare loop on the same device, fp32 and
bf16 autocast, with the GPU's utilisation while each runs.

Both train world-resnet18 (or --arch) with AdamW on the same composed images. The bare loop
gets them decoded, preprocessed and already on the device (channels-last) and runs only
forward, cross-entropy, backward and the step. `learn` streams the PNG files through its
loader (--loader-workers processes: read, sha256 check, decode, resize, flip + crop), copies
each pinned batch to the device and takes the same step. Printed per precision: images/s of
each over the training loop, their ratio, and the mean GPU utilisation that `nvidia-smi`
reports every 0.2 s during each loop (none without it). On a machine without CUDA it runs on
the CPU, to check the script itself:

    .venv/bin/python bench/learn_device.py                      # GPU: 8 192 images of 128²
    .venv/bin/python bench/learn_device.py --train-size 512 --epochs 1 --side 64   # CPU check
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.learn.hparams import Hparams
from dreamshift.learn.run import LearnConfig, learn
from dreamshift.models.architectures import ARCHITECTURES
from dreamshift.train.checkpoint import load_state


class Utilisation:
    """Mean GPU utilisation (%) that nvidia-smi reports while the ``with`` block runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self.stop.wait(0.2):
            out = subprocess.run(query, capture_output=True, text=True, check=False).stdout
            if out.strip():
                self.samples.append(float(out.split()[0]))

    def __enter__(self) -> Utilisation:
        if shutil.which("nvidia-smi"):
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    def mean(self) -> str:
        return f"{np.mean(self.samples):5.1f} %" if self.samples else "    –"


def bare_loop(arch: str, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
              bf16: bool, device: torch.device) -> float:  # fmt: skip
    """Seconds of ``epochs`` passes of forward, loss, backward, step over ``x`` on ``device``."""
    torch.manual_seed(0)
    net = ARCHITECTURES.get(arch)(10).to(device)
    hp = Hparams()
    opt = torch.optim.AdamW(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    steps = len(x) // batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), device=device)
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-size", type=int, default=8192)
    parser.add_argument("--side", type=int, default=128, help="image side (128)")
    parser.add_argument("--arch", default="world-resnet18")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        recipe = ShiftRecipe(train_size=args.train_size, val_per_group=1, test_per_group=1,
                             anti_per_group=0)  # fmt: skip
        compose(ComposeConfig(size=args.side, recipe=recipe), root, workers=8, progress=False)
        rows = [r for r in ds.read_manifest(root).to_pylist() if r["split"] == "train"]
        classes = ds.DatasetMeta.read(root).to_dict()["classes"]
        pixels = np.stack([np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows])
        x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1).to(device)
        y = torch.tensor([classes.index(r["fg_class"]) for r in rows], device=device)
        n = (len(x) // args.batch) * args.batch * args.epochs
        print(f"{name}: {len(x)} images of {args.side}², {args.arch}, batch {args.batch}, "
              f"{args.epochs} epochs, {args.loader_workers} loader workers")  # fmt: skip
        for bf16 in (False, True):
            with Utilisation() as bare_use:
                bare = n / bare_loop(args.arch, x, y, args.batch, args.epochs, bf16, device)
            cfg = LearnConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch,
                              input_size=args.side, eval_splits=(), val_split="",
                              mixed_precision="bf16" if bf16 else "no")  # fmt: skip
            with Utilisation() as ours_use:
                folder = learn(root, Path(tmp) / f"runs-{bf16}", cfg, log=lambda *_: None,
                               loader_workers=args.loader_workers)  # fmt: skip
            history = load_state(folder / "checkpoint.safetensors")["history"]
            ours = max(h["train_images_per_s"] for h in history)
            label = "bf16" if bf16 else "fp32"
            print(f"{label}  bare loop {bare:8.1f} img/s (GPU {bare_use.mean()})   "
                  f"learn {ours:8.1f} img/s (GPU {ours_use.mean()})   "
                  f"ratio {ours / bare:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
