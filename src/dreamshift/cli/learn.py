"""``dreamshift learn`` (training runs, one per algorithm x seed) and ``dreamshift probe``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dreamshift.cli.args import names
from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError


def add(sub: Any) -> None:
    p = sub.add_parser(
        "learn",
        help="train ERM, GroupDRO, IRM, DANN or the D3S disentangled model on a dataset",
        description="Train on the dataset's train split and evaluate on val/test/anti. Each "
        "run gets a folder named by a hash of its config under --out (resumable; finished runs "
        "are skipped); results are appended to OUT/results.jsonl. Images stream from the "
        "dataset directory (memory does not grow with it). Several processes or GPUs: "
        "`accelerate launch --multi_gpu --num_processes N -m dreamshift learn ...` (--batch-size "
        "is per process; only the main process writes).",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", required=True, type=Path, help="folder of runs")
    p.add_argument(
        "--algorithm",
        type=names,
        default=("erm",),
        help="comma-separated: erm, groupdro, irm, dann, d3s (erm)",
    )
    p.add_argument(
        "--seeds",
        type=lambda t: tuple(int(v) for v in names(t)),
        default=(0,),
        help="comma-separated seeds (0)",
    )
    p.add_argument(
        "--arch", default="world-cnn", help="world-cnn, world-cnn-gn (GroupNorm) or world-resnet18"
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--input-size",
        type=int,
        default=64,
        help="side the images are resized to (64); a head on --features-from must use its source's",
    )
    p.add_argument("--lr", type=float, help="peak learning rate (2e-3)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (5e-4)")
    p.add_argument(
        "--lr-schedule",
        default="constant",
        help="constant (DomainBed's), cosine (5 %% warm-up, cosine decay to 0) or onecycle "
        "(torch's OneCycleLR: up to --lr over 30 %% of the steps, then down)",
    )
    p.add_argument("--split", default=ds.TRAIN, help="DATASET's training split (train)")
    p.add_argument(
        "--val-split",
        default=ds.VAL,
        help="split scored after every epoch, where DATASET has it (val; '' for none)",
    )
    p.add_argument(
        "--features-from",
        type=Path,
        help="a finished run folder: train only a head on its frozen features (the fg block of "
        "a d3s run: D3S's classifier on invariant foreground features)",
    )
    p.add_argument(
        "--erase",
        help="with --features-from: background or class, removed from the frozen features by "
        "LEACE (Belrose et al. 2023) fitted on the source run's training split",
    )
    p.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="DIR[:SPLIT][@WEIGHT]",
        help="repeatable: training sources (default: DATASET's train split), with the same "
        "classes and backgrounds as DATASET, on which every run is evaluated; WEIGHT: the "
        "source's share of the draws (normalised)",
    )
    p.add_argument(
        "--mix",
        choices=["concat", "weighted"],
        default="concat",
        help="concat (each image once per epoch, or by @WEIGHT) or weighted: real sources "
        "share --real-weight of the draws, generated ones (made by `dreamshift dream`) the rest",
    )
    p.add_argument(
        "--real-weight",
        type=float,
        default=0.8,
        help="--mix weighted: the real sources' share, DataDream's lambda (0.8)",
    )
    p.add_argument(
        "--verified-only",
        action="store_true",
        help="generated sources: train on the images that passed review only (`dreamshift "
        "review export`)",
    )
    p.add_argument(
        "--use",
        choices=["all", "real", "generated"],
        default="all",
        help="which --train sources: all (default), real ones or generated ones only",
    )
    p.add_argument(
        "--train-size",
        type=int,
        default=0,
        help="images kept of each source (default all), class-balanced, nested across sizes",
    )
    sweep = p.add_argument_group(
        "a sweep: one run per mix and size under --out (ImageNet-G's study); `audit --model OUT` "
        "audits them all and fits effective robustness on the real family"
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
    tune = p.add_argument_group("fine-tuning a pretrained model (instead of --arch from scratch)")
    tune.add_argument(
        "--finetune",
        choices=["linear", "lora", "full"],
        help="linear: the head only; lora: low-rank adapters (peft) and the head; full: all",
    )
    tune.add_argument(
        "--model",
        help="the model whose features every algorithm then trains on: any --model of "
        "`dreamshift audit` (world-resnet18, a classifier folder, timm:NAME, torchvision:NAME, "
        "efficientnet_lite:NAME, open_clip:ARCH/PRETRAINED); inputs are fed as it was trained",
    )
    tune.add_argument("--rank", type=int, default=16, help="LoRA rank (16)")
    tune.add_argument("--alpha", type=int, default=32, help="LoRA alpha (32)")
    tune.add_argument(
        "--targets",
        type=names,
        default=(),
        help="comma-separated modules for LoRA, matched by name suffix (default: every Conv2d "
        "and Linear the features pass through)",
    )
    tune.add_argument(
        "--label-map",
        default="",
        help="YAML {class: [model label names or indices]}: which rows of an ImageNet model's "
        "head start each class's row",
    )
    p.add_argument(
        "--loader-workers",
        type=int,
        default=2,
        help="processes that decode, resize and augment images ahead of training, per training "
        "process (2); the weights do not depend on it",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="also checkpoint every STEPS steps within an epoch, for long epochs (0: after each "
        "epoch only); a relaunch resumes from the last one",
    )
    p.add_argument(
        "--mixed-precision",
        choices=["no", "bf16"],
        default="no",
        help="bf16 autocast (on GPUs; 10-30x slower on most CPUs) (no)",
    )
    p.add_argument(
        "--grad-accumulation",
        type=int,
        default=1,
        metavar="K",
        help="split each batch into K micro-batches, backpropagated one at a time: the same "
        "update with the activation memory of batch/K (erm and dann; batch norm then sees "
        "batch/K images) (1)",
    )
    p.add_argument(
        "--cpu", action="store_true", help="train on the CPU even where a GPU is available"
    )
    p.add_argument("--mi-estimator", help="d3s: mine (default), critic or classifier")
    p.add_argument("--mi-weight", type=float, help="d3s: weight of the MI penalty (1.0)")
    p.add_argument("--mi-steps", type=int, help="d3s: estimator steps per update (1)")
    p.add_argument("--mi-lr", type=float, help="d3s: estimator learning rate (1e-3)")
    p.add_argument(
        "--mi-anneal-steps", type=int, help="d3s: updates before the MI penalty starts (0)"
    )
    p.set_defaults(func=learn)
    q = sub.add_parser("probe", help="linear probes on a learn run's frozen feature blocks")
    q.add_argument("run", type=Path, help="a finished run folder of `dreamshift learn`")
    q.add_argument("dataset", type=Path)
    q.add_argument("--train-split", default=ds.TRAIN)
    q.add_argument("--test-split", default=ds.TEST)
    q.add_argument(
        "--erase",
        action="store_true",
        help="d3s runs: first remove the background from the fg block and the class from the "
        "bg block with LEACE (Belrose et al. 2023), fitted on the train split",
    )
    q.set_defaults(func=probe)


def configs(args: argparse.Namespace) -> list[Any]:
    """One LearnConfig per algorithm x seed, every one checked before the first run starts."""
    from dreamshift.learn.algorithms import Hparams
    from dreamshift.learn.run import LearnConfig
    from dreamshift.models.loading import absolute_spec

    hp = Hparams().replace(
        **{
            k: getattr(args, k)
            for k in (
                "mi_estimator",
                "mi_weight",
                "mi_steps",
                "mi_anneal_steps",
                "mi_lr",
                "lr",
                "weight_decay",
            )
        }
    )
    out = []
    for algorithm in args.algorithm:
        for seed in args.seeds:
            cfg = LearnConfig(
                algorithm=algorithm,
                arch=args.arch,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=seed,
                split=args.split,
                val_split=args.val_split,
                input_size=args.input_size,
                lr_schedule=args.lr_schedule,
                features_from=str(args.features_from.resolve()) if args.features_from else "",
                erase=args.erase or "",
                train=tuple(args.train),
                mix=args.mix,
                real_weight=args.real_weight,
                verified_only=args.verified_only,
                use=args.use,
                train_size=args.train_size,
                mixed_precision=args.mixed_precision,
                grad_accumulation=args.grad_accumulation,
                finetune=args.finetune or "",
                model=absolute_spec(args.model or ""),  # the base loads from anywhere
                rank=args.rank,
                alpha=args.alpha,
                targets=tuple(args.targets),
                label_map=str(Path(args.label_map).resolve()) if args.label_map else "",
                hparams=hp,
            )
            cfg.check()
            out.append(cfg)
    return out


def learn(args: argparse.Namespace) -> int:
    from dreamshift.learn.run import learn, learn_sweep
    from dreamshift.train.distributed import processes

    if args.loader_workers < 0 or args.checkpoint_every < 0:
        raise DreamshiftError(
            f"--loader-workers {args.loader_workers} and --checkpoint-every "
            f"{args.checkpoint_every} must be >= 0"
        )
    runtime = {"loader_workers": args.loader_workers, "checkpoint_every": args.checkpoint_every,
               "cpu": args.cpu}  # fmt: skip
    if args.mixes and not args.train_sizes:
        raise DreamshiftError("--mixes goes with --train-sizes N,N,...: the sizes to sweep")
    folders = []
    for cfg in configs(args):
        if args.train_sizes:
            mixes = args.mixes or ("real", "generated", "real+generated")
            folders += learn_sweep(args.dataset, args.out, cfg, args.train_sizes, mixes, **runtime)
        else:
            folders.append(learn(args.dataset, args.out, cfg, **runtime))
    if not processes(cpu=args.cpu).is_main:
        return 0
    for folder in folders:
        scores = json.loads((folder / "done").read_text())
        print(
            f"{folder}: "
            + "; ".join(
                f"{split} acc_avg {100 * m['acc_avg']:.1f} % acc_wg {100 * m['acc_wg']:.1f} %"
                for split, m in scores.items()
                if m["acc_avg"] is not None
            )
        )
    return 0


def probe(args: argparse.Namespace) -> int:
    from dreamshift.learn.run import probe as probe_run

    matrix = probe_run(args.dataset, args.run, args.train_split, args.test_split, args.erase)
    labels = list(matrix["chance"])
    width = max(len(block) for block in matrix)
    print(f"{'features':{width}s} " + "  ".join(f"-> {lab:10s}" for lab in labels))
    for block, row in matrix.items():
        print(f"{block:{width}s} " + "  ".join(f"   {100 * row[lab]:6.1f} %  " for lab in labels))
    return 0
