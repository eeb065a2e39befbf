"""``dreamshift info`` (counts per split and group) and ``dreamshift grid`` (a PNG)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add(sub: Any) -> None:
    info = sub.add_parser("info", help="counts per split and per foreground x background group")
    info.add_argument("dataset", type=Path)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--failed", action="store_true", help="list failed samples and reasons")
    info.set_defaults(func=show_info)

    grid = sub.add_parser("grid", help="PNG: rows = classes, columns = backgrounds")
    grid.add_argument("dataset", type=Path)
    grid.add_argument("--out", type=Path, help="PNG path (default DATASET/grid.png)")
    grid.add_argument("--split", help="only this split (default: any)")
    grid.add_argument("--cell", type=int, default=64, help="cell side in pixels (64)")
    grid.set_defaults(func=draw_grid)


def show_info(args: argparse.Namespace) -> int:
    from dreamshift.report.summary import dataset_info, failed_samples, format_info

    info = dataset_info(args.dataset)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    if args.failed:
        for sample_id, error in failed_samples(args.dataset):
            print(f"failed {sample_id}: {error}")
    return 0


def draw_grid(args: argparse.Namespace) -> int:
    from dreamshift.report.grid import make_grid

    out = args.out or Path(args.dataset) / "grid.png"
    print(make_grid(args.dataset, out, split=args.split, cell=args.cell))
    return 0
