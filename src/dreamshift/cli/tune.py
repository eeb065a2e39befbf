"""``dreamshift tune``: fine-tune the generator (LoRA or DreamBooth) on a few instance images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamshift.cli.args import add_config_flags, config_from_args
from dreamshift.tune.config import TuneConfig


def add(sub: Any) -> None:
    p = sub.add_parser(
        "tune",
        help="fine-tune a Stable Diffusion model on a few images: LoRA (DataDream) or DreamBooth",
        description="Fine-tune the generator on instance images chosen from SOURCE (a dataset "
        "directory, or a folder of class subfolders). The run gets a folder named by a hash of "
        "its config, model and images under --out (resumable; a finished run is skipped) and "
        "ends in diffusers' formats: pytorch_lora_weights.safetensors (use it with `dreamshift "
        "dream --adapter RUN`) or a full model folder RUN/model (`dream --model RUN`). Its "
        "losses and time are appended to OUT/results.jsonl.",
    )
    p.add_argument("source", type=Path, help="dataset directory or image folder")
    p.add_argument("--out", required=True, type=Path, help="folder of runs")
    p.add_argument("--config", type=Path, help="YAML file of TuneConfig fields (flags win)")
    add_config_flags(p, TuneConfig)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dreamshift.train.distributed import processes
    from dreamshift.tune.run import tune

    cfg = config_from_args(TuneConfig, args)

    folder = tune(args.source, args.out, cfg, progress=not args.no_progress)
    if processes(cpu=cfg.device == "cpu").is_main:
        print(folder)
    return 0
