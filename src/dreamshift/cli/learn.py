"""``dreamshift learn`` (training runs, one per algorithm x seed) and ``dreamshift probe``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dreamshift.cli.args import add_config_flags, config_from_args, ints, names
from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError
from dreamshift.learn.config import LearnConfig


def add(sub: Any) -> None:
    p = sub.add_parser(
        "learn",
        help="train ERM, GroupDRO, IRM, DANN or the D3S disentangled model on a dataset",
        description="Train on the dataset's train split and evaluate on val/test/anti. Each "
        "run gets a folder named by a hash of its config under --out (resumable; finished runs "
        "are skipped); results are appended to OUT/results.jsonl. Images stream from the "
        "dataset directory (memory does not grow with it). Several processes or GPUs: "
        "`accelerate launch --multi_gpu --num_processes N -m dreamshift.cli learn ...` "
        "(--batch-size is per process; only the main process writes).",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", required=True, type=Path, help="folder of runs")
    p.add_argument("--config", type=Path, help="YAML file of LearnConfig fields (flags win)")
    p.add_argument("--algorithm", type=names, metavar="ALGORITHM,...",
                   help="comma-separated: erm, groupdro, irm, dann, d3s (default: erm); one run "
                   "each")  # fmt: skip
    p.add_argument("--seeds", type=ints, metavar="SEED,...",
                   help="comma-separated seeds (default: 0); one run each")  # fmt: skip
    add_config_flags(p, LearnConfig)
    sweep = p.add_argument_group(
        "a sweep: one run per mix and size under --out (ImageNet-G's study); `audit --model OUT` "
        "audits them all and fits effective robustness on the real family"
    )
    sweep.add_argument(
        "--train-sizes",
        type=ints,
        metavar="N,N,...",
        help="training sizes: each source is cut to N images (smaller sets inside larger ones)",
    )
    sweep.add_argument(
        "--mixes",
        type=names,
        metavar="MIX,...",
        help="real, generated, real+generated (each source cut to N: 1:1) (default: all three)",
    )
    p.add_argument(
        "--loader-workers",
        type=int,
        default=2,
        help="processes that decode, resize and augment images ahead of training, per training "
        "process; the weights do not depend on it (default: 2)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="also checkpoint every STEPS steps within an epoch, for long epochs; a relaunch "
        "resumes from the last one (default: 0, after each epoch only)",
    )
    p.add_argument(
        "--cpu", action="store_true", help="train on the CPU even where a GPU is available"
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


def configs(args: argparse.Namespace) -> list[LearnConfig]:
    """One LearnConfig per algorithm x seed, every one checked before the first run starts;
    the paths in it made absolute (a run folder is audited from anywhere)."""
    from dreamshift.models.loading import absolute_spec

    base = config_from_args(LearnConfig, args)
    base = base.replace(
        features_from=str(Path(base.features_from).resolve()) if base.features_from else None,
        model=absolute_spec(base.model) or None,
        label_map=str(Path(base.label_map).resolve()) if base.label_map else None,
    )
    out = []
    for algorithm in args.algorithm or (base.algorithm,):
        for seed in args.seeds or (base.seed,):
            cfg = base.replace(algorithm=algorithm, seed=seed)
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
