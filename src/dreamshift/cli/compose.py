"""``dreamshift compose``: paste foregrounds on backgrounds (guides and the paste baseline)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamshift.cli.args import add_executor, executor_of, floats, names, pairs, report_failed
from dreamshift.compose.config import PRESETS as COMPOSE_PRESETS


def add(sub: Any) -> None:
    p = sub.add_parser(
        "compose",
        help="paste foregrounds on backgrounds: guide images and the paste baseline dataset",
        description="Compose a dataset directory of guide images with a controlled "
        "foreground/background correlation: a correlated train split (confounder strength "
        "rho), balanced val/test splits and an anti-correlated split. Run the same command "
        "again to continue an interrupted run.",
    )  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--config", type=Path, help="YAML file of ComposeConfig fields (flags win)")
    p.add_argument("--preset", choices=sorted(COMPOSE_PRESETS), help="a published recipe's "
                   "settings, under --config and flags: d3s = 512x512, --paste rect at 0.4, "
                   "no flip or rotation (D3S's official code)")  # fmt: skip
    p.add_argument("--class-names", help="foreground folders named by wnid (ImageNet's "
                   "train/<wnid>/): imagenet-1k (names from timm's data files) or a TSV file "
                   "of wnid<TAB>name<TAB>definition")  # fmt: skip
    p.add_argument("--per-class", type=int, help="foreground files sampled per class folder, "
                   "read entry by entry (default: all)")  # fmt: skip
    p.add_argument("--paste", choices=["mask", "rect"],
                   help="mask (the cut-out, default) or rect (the whole foreground image as a "
                   "centre-cropped square, as D3S)")  # fmt: skip
    p.add_argument("--foregrounds", help="'world' (default) or a folder: one sub-folder per class")
    p.add_argument("--backgrounds", help="'world' (default) or a folder: one sub-folder per label")
    p.add_argument("--classes", type=names, help="comma-separated subset of classes")
    p.add_argument("--background-names", type=names, help="comma-separated subset of backgrounds")
    p.add_argument("--size", type=int, help="output side in pixels (default 64)")
    p.add_argument("--seed", type=int, help="run seed (default 0)")
    p.add_argument(
        "--coat",
        choices=["typical", "random"],
        help="world animals' coats: class-typical (default) or random (the shape-only world)",
    )
    p.add_argument(
        "--render",
        choices=["paste", "photo"],
        help="paste: a naive cut-out, the guides (default); photo: the animal lit by its scene, "
        "with shadow and occlusion, the world's real images",
    )
    p.add_argument("--scale", type=floats, help="cut-out side / image side: S or MIN,MAX (0.4)")
    p.add_argument("--position", choices=["random", "center"], help="paste position (random)")
    p.add_argument("--feather", type=float, help="mask edge blur radius in pixels (0)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--max-rotation", type=float, help="random rotation range in degrees (10)")
    p.add_argument("--rho", type=float, help="confounder strength of the train split (0.95)")
    p.add_argument("--train-size", type=int, help="train images in all (2000)")
    p.add_argument("--val-per-group", type=int, help="val images per class x background (2)")
    p.add_argument("--test-per-group", type=int, help="test images per class x background (5)")
    p.add_argument("--anti-per-group", type=int, help="anti-correlated images per group (2)")
    p.add_argument(
        "--spurious-per-class",
        type=int,
        help="images of each class's assigned background without the animal (0): split "
        "'spurious', for the audit's spurious accuracy",
    )
    p.add_argument(
        "--conflict-per-group",
        type=int,
        help="images per class x background of one class's shape in another class's coat (0): "
        "split 'conflict', for the audit's shape bias (world, --coat typical)",
    )
    p.add_argument("--assign", type=pairs, help="CLASS=BACKGROUND,... spurious pairs to use")
    p.add_argument(
        "--share-foregrounds",
        action="store_true",
        help="use every foreground file in every split (folders with < 3 files per class)",
    )
    p.add_argument("--shard-size", type=int, help="images per shard folder (256)")
    add_executor(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config(args: argparse.Namespace) -> Any:
    """The YAML file's ComposeConfig with the given flags on top (compose() checks it)."""
    from dreamshift.compose.config import ComposeConfig

    cfg = ComposeConfig.from_yaml(args.config, COMPOSE_PRESETS.get(args.preset or ""))
    return cfg.replace(
        paste=args.paste,
        class_names=args.class_names,
        per_class=args.per_class,
        foregrounds=args.foregrounds,
        backgrounds=args.backgrounds,
        classes=args.classes,
        background_names=args.background_names,
        size=args.size,
        seed=args.seed,
        coat=args.coat,
        render=args.render,
        shard_size=args.shard_size,
        share_foregrounds=True if args.share_foregrounds else None,
        placement=cfg.placement.replace(
            scale=args.scale,
            position=args.position,
            feather=args.feather,
            max_rotation=args.max_rotation,
            flip=False if args.no_flip else None,
        ),
        recipe=cfg.recipe.replace(
            rho=args.rho,
            train_size=args.train_size,
            val_per_group=args.val_per_group,
            test_per_group=args.test_per_group,
            anti_per_group=args.anti_per_group,
            spurious_per_class=args.spurious_per_class,
            conflict_per_group=args.conflict_per_group,
            assignment=args.assign,
        ),
    )


def run(args: argparse.Namespace) -> int:
    from dreamshift.compose.runner import compose

    result = compose(config(args), args.out, workers=args.workers or 1,
                     progress=not args.no_progress, executor=executor_of(args))  # fmt: skip
    print(
        f"composed {result.num_samples} samples ({result.num_failed} failed, "
        f"{result.shards_run} shards run) in {result.seconds:.1f} s: {result.root}"
    )
    hint = (
        "their reasons are in the manifest's 'error' column "
        f"(dreamshift info {result.root} --failed)"
    )
    return report_failed(result.num_failed, hint)
