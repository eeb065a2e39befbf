"""Benchmark: guides per second of `dreamshift compose` against a bare loop of PIL `paste`.

Both read the same cut-out and background files (the world exported as folders), paste the
same cut-out at the same box on the same background, and write PNGs. The bare loop does only
that; dreamshift also plans the run, derives per-sample seeds, hashes the images, syncs each
shard to disk and writes the manifest and done markers. Printed: images/s of each and their
ratio, for 64x64 and 512x512, with 1 and 2 worker processes (best of interleaved repeats).
Run: `make bench` or `.venv/bin/python bench/compose.py`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from dreamshift.compose.config import ComposeConfig, Placement, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.world.export import export_world


def bare_loop(rows: list[dict], fg_root: Path, bg_root: Path, out: Path) -> float:
    """The baseline: open, resize, paste, save. Returns seconds."""
    out.mkdir(parents=True)
    start = time.perf_counter()
    for r in rows:
        bg = Image.open(bg_root / r["bg_source"]).convert("RGB")
        fg = Image.open(fg_root / r["fg_source"]).convert("RGBA")
        fg = fg.crop(fg.getchannel("A").getbbox()).resize((r["box_w"], r["box_h"]))
        bg.paste(fg, (r["box_x"], r["box_y"]), fg)
        bg.save(out / f"{r['index']}.png")
    return time.perf_counter() - start


def run(side: int, n: int, tmp: Path, repeats: int) -> None:
    files = export_world(
        tmp / f"files{side}", per_class=20, per_background=5, fg_size=side // 2, bg_size=side
    )
    fg_root, bg_root = files / "foregrounds", files / "backgrounds"
    cfg = ComposeConfig(
        foregrounds=str(fg_root),
        backgrounds=str(bg_root),
        size=side,
        share_foregrounds=True,
        placement=Placement(scale=(0.3, 0.5), flip=False, max_rotation=0),
        recipe=ShiftRecipe(train_size=n, val_per_group=0, test_per_group=0, anti_per_group=0),
        shard_size=max(16, n // 16),
    )
    # Interleaved repeats, best of each: file-system timings drift during a run.
    best: dict[str, float] = {}
    rows: list[dict] = []
    for rep in range(repeats):
        for workers in (1, 2):
            out = tmp / f"ds{side}_{workers}_{rep}"
            start = time.perf_counter()
            compose(cfg, out, workers=workers, progress=False)
            best[f"ds{workers}"] = min(best.get(f"ds{workers}", 1e9), time.perf_counter() - start)
            if not rows:
                rows = [r for r in ds.read_manifest(out).to_pylist() if r["status"] == "ok"]
        seconds = bare_loop(rows, fg_root, bg_root, tmp / f"bare{side}_{rep}")
        best["bare"] = min(best.get("bare", 1e9), seconds)
    bare = len(rows) / best["bare"]
    rates = {w: n / best[f"ds{w}"] for w in (1, 2)}

    world_cfg = ComposeConfig(
        size=side,
        recipe=ShiftRecipe(train_size=n, val_per_group=0, test_per_group=0, anti_per_group=0),
        shard_size=max(16, n // 16),
    )
    start = time.perf_counter()
    compose(world_cfg, tmp / f"world{side}", workers=1, progress=False)
    world = n / (time.perf_counter() - start)

    print(f"{side}x{side}, {n} images")
    print(f"  bare PIL paste loop          {bare:8.1f} img/s")
    print(f"  dreamshift compose, 1 worker {rates[1]:8.1f} img/s   ratio {rates[1] / bare:.2f}")
    print(f"  dreamshift compose, 2 workers{rates[2]:8.1f} img/s   ratio {rates[2] / bare:.2f}")
    print(f"  (world sources, procedural backgrounds, 1 worker: {world:.1f} img/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n64", type=int, default=2000, help="images at 64x64")
    parser.add_argument("--n512", type=int, default=200, help="images at 512x512")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dreamshift-bench-"))
    try:
        run(64, args.n64, tmp, args.repeats)
        run(512, args.n512, tmp, args.repeats)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
