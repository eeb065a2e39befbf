"""``dreamshift compose``: paste foregrounds on backgrounds (guides and the paste baseline)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamshift.cli.args import (
    add_config_flags,
    add_executor,
    config_from_args,
    executor_of,
    report_failed,
)
from dreamshift.compose.config import PRESETS as COMPOSE_PRESETS
from dreamshift.compose.config import ComposeConfig


def add(sub: Any) -> None:
    p = sub.add_parser(
        "compose",
        help="paste foregrounds on backgrounds: guide images and the paste baseline dataset",
        description="Compose a dataset directory of guide images with a controlled "
        "foreground/background correlation: a correlated train split (confounder strength "
        "rho), balanced val/test splits and an anti-correlated split. Run the same command "
        "again to continue an interrupted run; add --retry-failed to redo failed samples.",
    )  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--config", type=Path, help="YAML file of ComposeConfig fields (flags win)")
    p.add_argument("--preset", choices=sorted(COMPOSE_PRESETS), help="a published recipe's "
                   "settings, under --config and flags: d3s = 512x512, --paste rect at 0.4, "
                   "no flip or rotation (D3S's official code)")  # fmt: skip
    add_config_flags(p, ComposeConfig)
    add_executor(p)
    p.add_argument(
        "--retry-failed", action="store_true", help="redo the failed samples (files now fixed)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config(args: argparse.Namespace) -> ComposeConfig:
    """The preset, the YAML file's ComposeConfig and the given flags on top (compose() checks
    it)."""
    return config_from_args(ComposeConfig, args, COMPOSE_PRESETS.get(args.preset or ""))


def run(args: argparse.Namespace) -> int:
    from dreamshift.compose.runner import compose

    result = compose(config(args), args.out, workers=args.workers or 1,
                     progress=not args.no_progress, executor=executor_of(args),
                     retry_failed=args.retry_failed)  # fmt: skip
    print(
        f"composed {result.num_samples} samples ({result.num_failed} failed, "
        f"{result.shards_run} shards run) in {result.seconds:.1f} s: {result.root}"
    )
    hint = (
        f"their reasons are in the manifest's 'error' column (dreamshift info {result.root} "
        "--failed); fix the files and run the same command with --retry-failed"
    )
    return report_failed(result.num_failed, hint)
