"""Benchmark: memory of `dreamshift learn` as the dataset grows (it streams its images).

Composes world datasets of ``--sizes`` training images at ``--side`` pixels and trains one
epoch of ERM (world-cnn at ``--input-size``, batch 128, 2 loader workers) on each, as a
`dreamshift learn` subprocess. Every 50 ms it reads the memory of that process and of its
loader workers: the peak RSS of the training process, and the peak of the whole tree's PSS
(proportional set size: a page shared by the forked workers counts once, split between them;
the sum of their RSS would count torch's libraries three times). Printed per dataset: images,
decoded size, both peaks, and the growth from the smallest dataset.

    make bench-learn-memory                                  # 2 000 and 16 000 images of 128²
    .venv/bin/python bench/learn_memory.py --side 512 --sizes 4000   # 3 GB decoded
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose

MB = 2**20


def peak_memory(command: list[str]) -> tuple[float, float, float]:
    """(peak RSS of the process, peak PSS of it and its children, seconds) of ``command``."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    top = psutil.Process(proc.pid)
    rss = pss = 0.0
    while proc.poll() is None:
        try:
            tree = [top, *top.children(recursive=True)]
            rss = max(rss, top.memory_info().rss)
            pss = max(pss, sum(p.memory_full_info().pss for p in tree))
        except psutil.Error:
            pass  # a worker ended between the listing and the reading
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode})")
    return rss / MB, pss / MB, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2000,16000", help="training images per dataset")
    parser.add_argument("--side", type=int, default=128, help="image side (128)")
    parser.add_argument("--input-size", type=int, default=32, help="the network's input (32)")
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    dreamshift = str(Path(sys.executable).parent / "dreamshift")
    print(f"ERM, world-cnn at {args.input_size}², 1 epoch, batch 128, 2 loader workers")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            root = Path(tmp) / f"ds{n}"
            recipe = ShiftRecipe(train_size=n, val_per_group=1, test_per_group=1,
                                 anti_per_group=0)  # fmt: skip
            compose(ComposeConfig(size=args.side, recipe=recipe), root, workers=2, progress=False)
            decoded = n * args.side * args.side * 3 / MB
            rss, pss, seconds = peak_memory([
                dreamshift, "learn", str(root), "--out", str(Path(tmp) / f"runs{n}"),
                "--epochs", "1", "--batch-size", "128", "--input-size", str(args.input_size),
                "--loader-workers", "2",
            ])  # fmt: skip
            first = first or (rss, pss)
            print(
                f"{n:6d} images of {args.side}² ({decoded:7.0f} MB decoded): peak RSS "
                f"{rss:6.0f} MB (+{rss - first[0]:4.0f}), peak PSS with workers {pss:6.0f} MB "
                f"(+{pss - first[1]:4.0f}), {seconds:5.0f} s"
            )


if __name__ == "__main__":
    main()
