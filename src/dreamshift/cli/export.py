"""``dreamshift export DATASET --format hf|webdataset|imagefolder --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a dataset as HF Parquet + dataset card, webdataset tars or an imagefolder",
        description="The usable images, their object masks (where they have one) and every "
        "manifest column (and the verification table's, if any) in another layout. hf: "
        "data/<split>-*.parquet with Image columns image and mask and a dataset card README.md "
        "(datasets.load_dataset(DIR) reads it); webdataset: <split>-NNNNN.tar of png + "
        "mask.png + json; imagefolder: <split>/<class>/*.png, *.mask.png beside them + "
        "metadata.jsonl.",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument("--format", required=True, choices=["hf", "webdataset", "imagefolder"])
    p.add_argument("--out", required=True, type=Path, help="a new or empty folder")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from dreamshift.export.formats import export

    counts = export(args.dataset, args.out, args.format)
    total = sum(counts.values())
    print(f"wrote {args.out} ({args.format}): {total} images, "
          + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))  # fmt: skip
    return 0
