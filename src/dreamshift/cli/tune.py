"""``dreamshift tune``: fine-tune the generator (LoRA or DreamBooth) on a few instance images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamshift.cli.args import names


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
    p.add_argument("--method", help="lora (default; DataDream) or dreambooth (the whole UNet)")
    p.add_argument("--model", help="base model: tiny-dream (default), a diffusers folder or hub id")
    p.add_argument("--split", help="split of a dataset directory to take instances from (train)")
    p.add_argument("--classes", type=names, help="comma-separated classes (all)")
    p.add_argument("--backgrounds", type=names, help="comma-separated backgrounds (all)")
    p.add_argument("--shots", type=int, help="instances per class, drawn with --seed (0: all)")
    p.add_argument("--sample-ids", type=names, help="comma-separated sample ids instead")
    p.add_argument("--called-by", type=names, metavar="MODELS",
                   help="comma-separated classifiers (any `audit --model`): keep the images all "
                   "of them call their class (spurious images, with --split spurious)")  # fmt: skip
    p.add_argument("--identifier", help="DreamBooth's rare token (sks; 'q' for tiny-dream)")
    p.add_argument("--instance-prompt", help="template over ${identifier}, ${class_name}, "
                   "${background} (lora: 'a photo of a ${class_name}'; dreambooth: "
                   "'a photo of ${identifier} ${class_name}')")  # fmt: skip
    p.add_argument("--class-prompt", help="prior images' template ('a photo of a ${class_name}')")
    p.add_argument("--prior", help="dataset directory of class images made by the base model "
                   "(`dreamshift dream GUIDES --mode txt2img`): prior preservation")  # fmt: skip
    p.add_argument("--prior-images", type=int, help="prior images per class (0: all)")
    p.add_argument("--prior-weight", type=float, help="weight of the prior loss (1.0)")
    p.add_argument(
        "--train-text-encoder",
        action="store_true",
        default=None,
        help="also train the text encoder (LoRA on its attention, or all of it)",
    )
    p.add_argument("--rank", type=int, help="LoRA rank (16, DataDream's)")
    p.add_argument("--alpha", type=int, help="LoRA alpha (default: the rank)")
    p.add_argument("--targets", type=names, help="UNet modules to adapt (to_k,to_q,to_v,to_out.0)")
    p.add_argument("--per-class", action="store_true", default=None,
                   help="one LoRA per class (DataDream) instead of one for all")  # fmt: skip
    p.add_argument(
        "--sfsl",
        metavar="MODEL",
        help="spurious feature similarity loss of this classifier (any `audit --model`): pull "
        "the UNet's one-step image toward the instance's class-k spurious feature",
    )
    p.add_argument("--kappa", type=float, help="weight of the SFSL (needs --sfsl)")
    p.add_argument("--steps", type=int, help="optimizer steps (400)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="instances per step and process (4; as many "
        "prior images); under `accelerate launch` the global batch is N x processes",
    )
    p.add_argument("--lr", type=float, help="learning rate (1e-4)")
    p.add_argument("--lr-schedule", help="constant (default) or cosine (5 %% warm-up)")
    p.add_argument("--snr-gamma", type=float, help="Min-SNR weighting gamma (0: off; 5 usual)")
    p.add_argument("--resolution", type=int, help="training side (default: the images')")
    p.add_argument("--seed", type=int, help="(0)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (100)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="(auto)")
    p.add_argument("--precision", choices=["auto", "no", "bf16"],
                   help="auto: bf16 autocast on CUDA, float32 elsewhere")  # fmt: skip
    p.add_argument("--gradient-checkpointing", action="store_true", default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


FLAGS = (
    "method", "model", "split", "classes", "backgrounds", "shots", "sample_ids", "called_by",
    "identifier", "instance_prompt", "class_prompt", "prior", "prior_images", "prior_weight",
    "train_text_encoder", "rank", "alpha", "targets", "per_class", "sfsl", "kappa", "steps",
    "batch_size", "lr", "lr_schedule", "snr_gamma", "resolution", "seed", "checkpoint_every",
    "device", "precision", "gradient_checkpointing",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from dreamshift.tune.config import TuneConfig
    from dreamshift.tune.run import tune

    cfg = TuneConfig.from_yaml(args.config).replace(**{k: getattr(args, k) for k in FLAGS})
    from dreamshift.train.distributed import processes

    folder = tune(args.source, args.out, cfg, progress=not args.no_progress)
    if processes(cpu=cfg.device == "cpu").is_main:
        print(folder)
    return 0
