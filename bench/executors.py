"""Benchmark: images per second of `compose --executor ray` against the local process pool.

Both compose the same world dataset of scene-lit photo renders (the slowest compose render:
light, shadow, occlusion) with the same number of workers, into fresh folders; the outputs are
byte-identical (tests/test_ray.py). Ray runs on a local Ray instance started before the timing
(as on a running cluster); its start-up is printed apart. Printed: images/s of each and their
ratio (best of interleaved repeats). Run: `make bench-ray` or `.venv/bin/python bench/executors.py`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.engine.executors import LocalPool
from dreamshift.engine.ray_executor import RayExecutor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", default="2000,4000", help="sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    print(
        f"ray.init (a local instance of {args.workers} CPUs): {time.perf_counter() - start:.1f} s"
    )
    for images in [int(x) for x in args.images.split(",")]:
        bench(images, args.workers, args.shard_size, args.repeats)


def bench(images: int, workers: int, shard_size: int, repeats: int) -> None:
    cfg = ComposeConfig(
        render="photo",
        recipe=ShiftRecipe(train_size=images, val_per_group=0, test_per_group=0,
                           anti_per_group=0),
        shard_size=shard_size,
    )  # fmt: skip
    executors = {"local pool": LocalPool(workers), "ray": RayExecutor(actors=workers)}
    best = dict.fromkeys(executors, float("inf"))
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for name, executor in executors.items():
                out = Path(tmp) / f"{name.replace(' ', '-')}-{rep}"
                t = time.perf_counter()
                compose(cfg, out, executor=executor, progress=False)
                best[name] = min(best[name], time.perf_counter() - t)
                shutil.rmtree(out)
    for name, seconds in best.items():
        print(f"{name:10s}: {images} images in {seconds:.1f} s = {images / seconds:.1f} img/s")
    print(f"ratio ray / local pool at {images} images: {best['local pool'] / best['ray']:.2f} "
          f"({workers} workers, shards of {shard_size})")  # fmt: skip


if __name__ == "__main__":
    main()
