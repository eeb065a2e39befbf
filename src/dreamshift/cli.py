"""``dreamshift <command>``: parses arguments, builds a config, calls the library.

Every command has ``--help``. ``main(argv)`` returns the exit status (0 ok, 1 some samples
failed, 2 bad input), so tests call it directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from dreamshift import __version__
from dreamshift.errors import DreamshiftError


def _floats(text: str) -> tuple[float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"expected MIN or MIN,MAX, got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in _names(text):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected CLASS=BACKGROUND, got {item!r}")
        c, b = item.split("=", 1)
        out.append((c.strip(), b.strip()))
    return tuple(out)


def _add_compose(sub: Any) -> None:
    p = sub.add_parser(
        "compose",
        help="paste foregrounds on backgrounds: guide images and the paste baseline dataset",
        description="Compose a dataset directory of guide images with a controlled "
        "foreground/background correlation: a correlated train split (confounder strength "
        "rho), balanced val/test splits and an anti-correlated split. Run the same command "
        "again to continue an interrupted run.",
    )
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--config", type=Path, help="YAML file of ComposeConfig fields (flags win)")
    p.add_argument("--foregrounds", help="'world' (default) or a folder: one sub-folder per class")
    p.add_argument("--backgrounds", help="'world' (default) or a folder: one sub-folder per label")
    p.add_argument("--classes", type=_names, help="comma-separated subset of classes")
    p.add_argument("--background-names", type=_names, help="comma-separated subset of backgrounds")
    p.add_argument("--size", type=int, help="output side in pixels (default 64)")
    p.add_argument("--seed", type=int, help="run seed (default 0)")
    p.add_argument("--scale", type=_floats, help="cut-out side / image side: S or MIN,MAX (0.4)")
    p.add_argument("--position", choices=["random", "center"], help="paste position (random)")
    p.add_argument("--feather", type=float, help="mask edge blur radius in pixels (0)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--max-rotation", type=float, help="random rotation range in degrees (10)")
    p.add_argument("--rho", type=float, help="confounder strength of the train split (0.95)")
    p.add_argument("--train-size", type=int, help="train images in all (2000)")
    p.add_argument("--val-per-group", type=int, help="val images per class x background (2)")
    p.add_argument("--test-per-group", type=int, help="test images per class x background (5)")
    p.add_argument("--anti-per-group", type=int, help="anti-correlated images per group (2)")
    p.add_argument("--assign", type=_pairs, help="CLASS=BACKGROUND,... spurious pairs to use")
    p.add_argument(
        "--share-foregrounds", action="store_true",
        help="use every foreground file in every split (folders with < 3 files per class)",
    )  # fmt: skip
    p.add_argument("--shard-size", type=int, help="images per shard folder (256)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _compose_config(args: argparse.Namespace) -> Any:
    from dreamshift.config import ComposeConfig

    base: dict[str, Any] = {}
    if args.config:
        try:
            base = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DreamshiftError(f"cannot read config {args.config}: {exc}") from exc
        if not isinstance(base, dict):
            raise DreamshiftError(f"config {args.config} must hold a mapping of fields")
    try:
        cfg = ComposeConfig.from_dict(base)
    except TypeError as exc:
        raise DreamshiftError(f"config {args.config}: {exc}") from exc
    top = {k: getattr(args, k) for k in ("foregrounds", "backgrounds", "classes", "size", "seed")}
    top["background_names"] = args.background_names
    top["shard_size"] = args.shard_size
    if args.share_foregrounds:
        top["share_foregrounds"] = True
    place = {"scale": args.scale, "position": args.position, "feather": args.feather}
    place["max_rotation"] = args.max_rotation
    if args.no_flip:
        place["flip"] = False
    recipe = {
        "rho": args.rho,
        "train_size": args.train_size,
        "val_per_group": args.val_per_group,
        "test_per_group": args.test_per_group,
        "anti_per_group": args.anti_per_group,
        "assignment": args.assign,
    }

    def given(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None}

    return replace(
        cfg,
        **given(top),
        placement=replace(cfg.placement, **given(place)),
        recipe=replace(cfg.recipe, **given(recipe)),
    )  # compose() checks it: ComposeConfig.check names any wrong type or value


def _cmd_compose(args: argparse.Namespace) -> int:
    from dreamshift.compose import compose

    result = compose(
        _compose_config(args), args.out, workers=args.workers, progress=not args.no_progress
    )
    print(
        f"composed {result.num_samples} samples ({result.num_failed} failed, "
        f"{result.shards_run} shards run) in {result.seconds:.1f} s: {result.root}"
    )
    if result.num_failed:
        print(
            f"{result.num_failed} samples failed; their reasons are in the manifest's 'error' "
            f"column (dreamshift info {result.root} --failed)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from dreamshift.summary import dataset_info, failed_samples, format_info

    info = dataset_info(args.dataset)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    if args.failed:
        for sample_id, error in failed_samples(args.dataset):
            print(f"failed {sample_id}: {error}")
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    from dreamshift.grid import make_grid

    out = args.out or Path(args.dataset) / "grid.png"
    print(make_grid(args.dataset, out, split=args.split, cell=args.cell))
    return 0


def _cmd_world(args: argparse.Namespace) -> int:
    from dreamshift.world import export

    if args.world_command == "info":
        print(export.world_summary())
    elif args.world_command == "export":
        out = export.export_world(
            args.out, args.per_class, args.per_background, args.split, args.fg_size, args.bg_size
        )
        print(f"foregrounds in {out / 'foregrounds'}, backgrounds in {out / 'backgrounds'}")
    elif args.world_command == "preview":
        print(export.preview_sheet(args.out, size=args.size, seed=args.seed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamshift",
        description="Image datasets with controlled foreground/background shifts.",
    )
    parser.add_argument("--version", action="version", version=f"dreamshift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = sub.add_parser("world", help="the embedded world: info, export, preview")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND")
    wsub.add_parser("info", help="classes, backgrounds and silhouette splits")
    exp = wsub.add_parser("export", help="write world cut-outs and backgrounds as folders")
    exp.add_argument("--out", required=True, type=Path)
    exp.add_argument("--per-class", type=int, default=20, help="cut-outs per class (20)")
    exp.add_argument("--per-background", type=int, default=10, help="images per background (10)")
    exp.add_argument("--split", choices=["train", "val", "test"], default="train")
    exp.add_argument("--fg-size", type=int, default=128, help="cut-out longer side (128)")
    exp.add_argument("--bg-size", type=int, default=64, help="background side (64)")
    pre = wsub.add_parser("preview", help="a PNG sheet of every background kind and some animals")
    pre.add_argument("--out", required=True, type=Path)
    pre.add_argument("--size", type=int, default=64)
    pre.add_argument("--seed", type=int, default=0)
    world.set_defaults(func=_cmd_world)

    _add_compose(sub)
    sub.choices["compose"].set_defaults(func=_cmd_compose)

    info = sub.add_parser("info", help="counts per split and per foreground x background group")
    info.add_argument("dataset", type=Path)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--failed", action="store_true", help="list failed samples and reasons")
    info.set_defaults(func=_cmd_info)

    grid = sub.add_parser("grid", help="PNG: rows = classes, columns = backgrounds")
    grid.add_argument("dataset", type=Path)
    grid.add_argument("--out", type=Path, help="PNG path (default DATASET/grid.png)")
    grid.add_argument("--split", help="only this split (default: any)")
    grid.add_argument("--cell", type=int, default=64, help="cell side in pixels (64)")
    grid.set_defaults(func=_cmd_grid)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DreamshiftError as exc:
        print(f"dreamshift: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dreamshift: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
