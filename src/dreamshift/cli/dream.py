"""``dreamshift dream`` (guides -> dreamed images) and ``dreamshift regenerate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dreamshift.cli.args import (
    add_config_flags,
    add_executor,
    config_from_args,
    executor_of,
    names,
    report_failed,
)
from dreamshift.dream.config import PRESETS as DREAM_PRESETS
from dreamshift.dream.config import DreamConfig
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
    add_config_flags(p, DreamConfig)
    p.add_argument("--batch-size", type=int, default=1, help="images per pipeline call (1)")
    add_executor(p)
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


def config(args: argparse.Namespace) -> DreamConfig:
    """The preset, the YAML file's DreamConfig, the source and the given flags on top."""
    return config_from_args(DreamConfig, args, DREAM_PRESETS.get(args.preset or ""),
                            source=args.source)  # fmt: skip


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
