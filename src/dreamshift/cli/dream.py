"""``dreamshift dream`` (guides -> dreamed images) and ``dreamshift regenerate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dreamshift.cli.args import add_executor, executor_of, names, report_failed
from dreamshift.dream.config import PRESETS as DREAM_PRESETS
from dreamshift.errors import DreamshiftError


def add(sub: Any) -> None:
    p = sub.add_parser(
        "dream",
        help="diffusion img2img/txt2img from a composed dataset (or paste: copy the guides)",
        description="Turn a composed dataset of guides into a dreamed one with a diffusers "
        "Stable Diffusion model (D3S img2img, or txt2img as ImageNet-G). Every image has its "
        "own seed and full provenance in the manifest. Run the same command again to "
        "continue an interrupted run; add --retry-failed to redo failed samples.",
    )
    p.add_argument("source", help="composed dataset directory")
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--config", type=Path, help="YAML file of DreamConfig fields (flags win)")
    p.add_argument("--preset", choices=sorted(DREAM_PRESETS), help="a published recipe's "
                   "settings, under --config and flags: d3s = Stable Diffusion v1.4, DDIM 50 "
                   "steps, guidance 5.0, strength 0.9, 512x512, the d3s prompts")  # fmt: skip
    p.add_argument("--mode", choices=["img2img", "txt2img", "paste"], help="(img2img)")
    p.add_argument(
        "--model",
        help="tiny-dream (default: shipped, trained on the world), a diffusers "
        "Stable Diffusion folder, or a hub id",
    )
    p.add_argument(
        "--adapter",
        dest="adapters",
        action="append",
        metavar="RUN[:SCALE]",
        help="a LoRA to apply (repeatable): a `dreamshift tune` run folder or a diffusers LoRA "
        ".safetensors file, at SCALE (1); a per-class run applies each class's adapter to "
        "that class's samples",
    )
    p.add_argument("--prompts", help="recipe: d3s (default), imagenet-g, or a YAML file")
    p.add_argument("--negative-prompt", help="overrides the recipe's negative prompt")
    p.add_argument("--scheduler", help="model (default), ddim, euler, euler-a, dpm++, lcm")
    p.add_argument("--steps", type=int, help="denoising steps (30)")
    p.add_argument("--strength", type=float, help="img2img noise strength in (0, 1] (0.8)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance (7.5)")
    p.add_argument("--width", type=int, help="output width (default: the guides')")
    p.add_argument("--height", type=int, help="output height (default: the guides')")
    p.add_argument(
        "--splits",
        type=names,
        help="comma-separated splits to dream (all but 'conflict', whose coats the prompt's "
        "class tends to repaint: name it to dream it)",
    )
    p.add_argument("--seed", type=int, help="run seed (0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="(auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"],
                   help="(auto: float16 on CUDA, else float32)")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch threads per worker on a CPU "
                   "(default cores / workers). Pixels are identical for any --workers and "
                   "--batch-size at a fixed --threads; left unset, --workers alone may move "
                   "pixels by one level. Recorded; a resumed run keeps it")  # fmt: skip
    p.add_argument("--no-batch-invariant", action="store_true",
                   help="let the networks see whole batches: faster on a GPU, but pixels "
                   "then depend on the batch (to within float rounding)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--batch-size", type=int, default=1, help="images per pipeline call (1)")
    add_executor(p)
    p.add_argument("--shard-size", type=int, help="images per shard folder (64)")
    p.add_argument("--retry-failed", action="store_true", help="redo the failed samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

    regen = sub.add_parser(
        "regenerate", help="remake dreamed samples from their manifest rows and compare"
    )
    regen.add_argument("dataset", type=Path)
    regen.add_argument("sample_ids", nargs="*", metavar="SAMPLE_ID")
    regen.add_argument("--all", action="store_true", help="every sample of the dataset")
    regen.add_argument("--model", help="where the model is now (default: where the run found it)")
    regen.add_argument("--out", type=Path, help="also write the remade images to this folder")
    regen.set_defaults(func=regenerate)
    add_backgrounds(sub)


def config(args: argparse.Namespace) -> Any:
    """The YAML file's DreamConfig with the source and the given flags on top."""
    from dreamshift.dream.config import DreamConfig

    given = {k: getattr(args, k) for k in CONFIG_FLAGS}
    if args.adapters:
        given["adapters"] = tuple(args.adapters)
    cfg = DreamConfig.from_yaml(args.config, DREAM_PRESETS.get(args.preset or ""),
                                source=args.source)  # fmt: skip
    return cfg.replace(
        **given,
        batch_invariant=False if args.no_batch_invariant else None,
        compile=True if args.compile else None,
    )


CONFIG_FLAGS = (
    "mode", "model", "prompts", "negative_prompt", "scheduler", "steps", "strength",
    "guidance_scale", "width", "height", "splits", "seed", "device", "dtype", "threads",
    "shard_size",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from dreamshift.dream.runner import dream

    cfg = config(args)
    executor = executor_of(args, use_gpus=cfg.device in ("auto", "cuda"))
    if executor is not None and cfg.threads is None:
        cfg = cfg.replace(threads=1)  # a CPU actor holds one core
    result = dream(
        cfg,
        args.out,
        workers=args.workers or 1,
        executor=executor,
        batch_size=args.batch_size,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
    )
    print(
        f"dreamed {result.num_samples} samples ({result.num_failed} failed, "
        f"{result.num_flagged} flagged, {result.shards_run} shards run) in "
        f"{result.seconds:.1f} s: {result.root}"
    )
    if result.num_flagged:
        print(f"{result.num_flagged} images are flagged (black or blank); they have status "
              "'flagged' and the reason in 'flag'", file=sys.stderr)  # fmt: skip
    hint = (
        f"see `dreamshift info {result.root} --failed`; fix the cause and run the same "
        "command with --retry-failed"
    )
    return report_failed(result.num_failed, hint)


def regenerate(args: argparse.Namespace) -> int:
    from dreamshift.dream.runner import regenerate as remake

    if not args.sample_ids and not args.all:
        raise DreamshiftError("name SAMPLE_IDs to regenerate, or pass --all")
    results = remake(args.dataset, args.sample_ids or None, args.model, args.out)
    for r in results:
        state = {True: "match", False: "MISMATCH", None: "skipped"}[r.match]
        print(f"{state} {r.sample_id}: {r.detail}")
    bad = sum(r.match is False for r in results)
    same = sum(r.match is True for r in results)
    print(f"{same} of {len(results)} regenerated identically, {bad} differ")
    return 1 if bad else 0


def add_backgrounds(sub: Any) -> None:
    p = sub.add_parser(
        "backgrounds",
        help="background templates dreamed by txt2img ('a photo of grass', ...), for compose",
        description="txt2img images per background label, a dataset directory like any other "
        "(seeds, provenance, resume); `compose --backgrounds DIR` takes it as templates.",
    )
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--labels", type=names, default=BACKGROUND_LABELS,
                   help="background labels (default: D3S's ten)")  # fmt: skip
    p.add_argument("--per-label", type=int, required=True, help="images per label")
    p.add_argument("--model", default="tiny-dream")
    p.add_argument("--template", default="a photo of ${background_name}",
                   help="the prompt; ${background_name} is the label")  # fmt: skip
    p.add_argument("--size", type=int, default=64, help="image side (64; 512 for SD 1.x)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    add_executor(p)
    p.set_defaults(func=run_backgrounds)


BACKGROUND_LABELS = ("grass", "road", "forest", "water", "sand", "indoors", "snow", "rain",
                     "night", "cave")  # fmt: skip


def run_backgrounds(args: argparse.Namespace) -> int:
    from dreamshift.dream.backgrounds import make_backgrounds

    executor = executor_of(args, use_gpus=True)
    result = make_backgrounds(
        args.out, args.labels, args.per_label, args.model, args.template, args.size,
        args.steps, args.guidance_scale, args.seed, workers=args.workers or 1,
        batch_size=args.batch_size, executor=executor, progress=not args.no_progress,
        **({"threads": 1} if executor is not None else {}),
    )  # fmt: skip
    print(f"dreamed {result.num_samples} backgrounds ({result.num_failed} failed) in "
          f"{result.seconds:.1f} s: {result.root} (for compose --backgrounds)")  # fmt: skip
    return report_failed(result.num_failed, "run the same command again to retry them")
