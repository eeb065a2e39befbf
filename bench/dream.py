"""Benchmark: images per second of `dreamshift dream` against a bare diffusers loop.

Both use the same tiny random-weight Stable Diffusion (saved and loaded with from_pretrained),
the same 64x64 guides, prompts, steps, strength and guidance. The bare loop loads
StableDiffusionImg2ImgPipeline (``--mode inpaint``: StableDiffusionInpaintPipeline, given the
region around each guide's object mask) and calls it one image at a time with a seeded
generator, saving each image as PNG; inpaint in dreamshift also reads and checks each mask and
restores the object's pixels. dreamshift also plans the run, hashes the model, checks every guide's
sha256, flags black images, syncs each shard to disk and writes the manifest. Both timings
include loading the model (and, with workers, starting the processes, each of which imports
diffusers); importing diffusers in this process happens before either is timed. Printed: images/s of
each configuration and its ratio to the bare loop run in this process (best of interleaved
repeats: this machine's speed drifts between runs).
Run: `make bench-dream` or `.venv/bin/python bench/dream.py [--images N] [--mode inpaint]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream
from dreamshift.models.diffusion import quiet_libraries
from dreamshift.models.tiny_sd import save_tiny_sd

STEPS, STRENGTH, GUIDANCE = 8, 0.75, 7.5


def bare_loop(model: Path, source: Path, prompts: list[str], out: Path, mode: str) -> float:
    """The baseline: load the pipeline, then one pipeline call per image. Returns seconds."""
    quiet_libraries()
    import diffusers
    import numpy as np
    import torch
    from PIL import Image

    rows = [r for r in ds.read_manifest(source).to_pylist() if r["status"] == "ok"]
    out.mkdir(parents=True)
    start = time.perf_counter()
    name = (
        "StableDiffusionInpaintPipeline" if mode == "inpaint" else "StableDiffusionImg2ImgPipeline"
    )
    pipe = getattr(diffusers, name).from_pretrained(model, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    for i, (r, prompt) in enumerate(zip(rows, prompts, strict=True)):
        extra = {}
        if mode == "inpaint":  # redraw all but the object
            mask = np.asarray(Image.open(source / r["mask_path"]))
            extra["mask_image"] = Image.fromarray(np.where(mask, 0, 255).astype(np.uint8))
        image = pipe(
            prompt=prompt,
            image=Image.open(source / r["path"]).convert("RGB"),
            strength=STRENGTH,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=torch.Generator().manual_seed(i),
            **extra,
        ).images[0]
        image.save(out / f"{i}.png")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mode", choices=("img2img", "inpaint"), default="img2img")
    args = parser.parse_args()
    quiet_libraries()  # imports diffusers and transformers (~5 s) before any timing
    tmp = Path(tempfile.mkdtemp(prefix="dreamshift-bench-"))
    model = save_tiny_sd(tmp / "tiny-sd")
    source = tmp / "guides"
    recipe = ShiftRecipe(train_size=args.images, val_per_group=0, test_per_group=0,
                         anti_per_group=0)  # fmt: skip
    compose(ComposeConfig(recipe=recipe), source, progress=False)
    cfg = DreamConfig(
        source=str(source), model=str(model), steps=STEPS, strength=STRENGTH,
        guidance_scale=GUIDANCE, shard_size=16, mode=args.mode,
    )  # fmt: skip

    runs = {  # name: (workers, batch size, threads per worker)
        "dream, batch 1, 1 worker x 2 threads": (1, 1, 2),
        "dream, batch 4, 1 worker x 2 threads": (1, 4, 2),
        "dream, batch 4, 2 workers x 1 thread": (2, 4, 1),
    }
    best: dict[str, float] = {}
    prompts: list[str] = []
    for rep in range(args.repeats):
        for k, (name, (workers, batch, threads)) in enumerate(runs.items()):
            out = tmp / f"dream{k}_{rep}"
            run_cfg = DreamConfig(**{**cfg.__dict__, "threads": threads})
            start = time.perf_counter()
            dream(run_cfg, out, workers=workers, batch_size=batch, progress=False)
            best[name] = min(best.get(name, 1e9), time.perf_counter() - start)
            if not prompts:
                prompts = [r["prompt"] for r in ds.read_manifest(out).to_pylist()]
        seconds = bare_loop(model, source, prompts, tmp / f"bare{rep}", args.mode)
        best["bare"] = min(best.get("bare", 1e9), seconds)
    bare = args.images / best.pop("bare")
    rates = {name: args.images / seconds for name, seconds in best.items()}

    print(f"{args.mode}: {args.images} images, 64x64, {STEPS} steps x strength {STRENGTH}, "
          "2 CPU cores")  # fmt: skip
    print(f"  {'bare diffusers loop, 1 image per call':<40}{bare:7.2f} img/s")
    for name, rate in rates.items():
        print(f"  {name:<40}{rate:7.2f} img/s   ratio {rate / bare:.2f}")
    print(f"(temporary files in {tmp})")


if __name__ == "__main__":
    main()
